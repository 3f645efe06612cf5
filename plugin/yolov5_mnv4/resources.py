"""The files the plugin reads at run time, found inside the installed package (a checkout, a wheel,
an sdist build or a zip), never through paths relative to the repository:

    configs/               the YOLOv5 configs; in a checkout a link to the repository's models/,
                           where they are edited; builds copy the files in
    configs/ultralytics/   the configs for the Ultralytics package (YOLOv5u, YOLO11, YOLO26 heads)
    shipped_configs.txt    sha256 of every config version the plugin has shipped (hosts/yolov5_tree.py)
    data/coco8/            the embedded dataset (8 train + 4 val COCO images), for the demo
"""
import functools
import re
import tempfile
from importlib import resources
from pathlib import Path

PACKAGE = __package__ or 'yolov5_mnv4'
# The detection config of each variant; the -relu, -seg and -p2 configs are named after it.
VARIANT_CONFIGS = {'conv_small': 'yolov5-mnv4-conv-s.yaml', 'conv_medium': 'yolov5-mnv4-conv-m.yaml',
                   'conv_large': 'yolov5-mnv4-conv-l.yaml', 'hybrid_medium': 'yolov5-mnv4-hybrid-m.yaml',
                   'hybrid_large': 'yolov5-mnv4-hybrid-l.yaml'}


DISTRIBUTION = 'yolov5-mnv4'


def install_hint(extra):
    """A pip command that installs what `extra` adds, runnable by a user of a clone or a wheel alike:
    the extra's packages as the installed metadata lists them (no package index holds this plugin)."""
    from importlib import metadata
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        requirements = []
    marker = re.compile(rf'extra\s*==\s*["\']{re.escape(extra)}["\']')
    packages = [r.split(';')[0].strip().replace(' ', '') for r in requirements if marker.search(r)]
    if not packages:
        return f"pip install '/path/to/yolov5-mnv4[{extra}]' (your clone of yolov5-mnv4, or its wheel)"
    return 'pip install ' + ' '.join(f"'{p}'" if set(p) & set('<>=!~[') else p for p in packages)


def _files():
    return resources.files(PACKAGE)


def configs():
    """{file name: bytes} of every config the plugin ships."""
    folder = _files() / 'configs'
    found = {f.name: f.read_bytes() for f in folder.iterdir() if f.name.endswith('.yaml')} if folder.is_dir() else {}
    if not found:
        raise FileNotFoundError(f'no configs in {folder}: this installation of yolov5-mnv4 is incomplete '
                                f'(reinstall it from your clone of yolov5-mnv4: pip install /path/to/yolov5-mnv4)')
    return dict(sorted(found.items()))


def shipped_configs_text():
    return (_files() / 'shipped_configs.txt').read_text()


def _as_folder(traversable, name):
    """A real folder with the contents of a package folder: itself where the package is on disk,
    else a copy extracted once per process (a zipped install)."""
    if isinstance(traversable, Path):
        return traversable
    target = Path(tempfile.mkdtemp(prefix='yolov5-mnv4-')) / name

    def copy(src, dst):
        dst.mkdir(parents=True, exist_ok=True)
        for item in src.iterdir():
            if item.is_dir():
                copy(item, dst / item.name)
            else:
                (dst / item.name).write_bytes(item.read_bytes())

    copy(traversable, target)
    return target


@functools.lru_cache(maxsize=None)
def ultralytics_configs():
    """The folder of the Ultralytics-package configs, as a real folder."""
    return _as_folder(_files() / 'configs' / 'ultralytics', 'ultralytics-configs')


# The 80 COCO classes, in the order of the COCO-format datasets of YOLOv5 and the Ultralytics package
COCO_NAMES = ('person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
              'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog',
              'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella',
              'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
              'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle',
              'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange',
              'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant',
              'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone',
              'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors',
              'teddy bear', 'hair drier', 'toothbrush')


def write_data_yaml(data, names, path):
    """A data YAML (YOLOv5's and the Ultralytics package's format) for the YOLO-format folder `data`
    (images/ and labels/ with train2017 and val2017), with an absolute `path:`. Returns `path`."""
    import yaml
    spec = {'path': str(data), 'train': 'images/train2017', 'val': 'images/val2017', 'names': list(names)}
    Path(path).write_text(yaml.safe_dump(spec, sort_keys=False))
    return Path(path)


def dataset_yaml(source, folder, names=COCO_NAMES):
    """A copy of the YOLO-format dataset `source` in `folder`/dataset and its data YAML,
    `folder`/data.yaml (write_data_yaml). Both hosts write label caches beside the labels: a copy keeps
    them out of the source (the embedded images, a shared dataset). Returns the YAML's path."""
    import shutil
    data = shutil.copytree(source, Path(folder) / 'dataset', dirs_exist_ok=True,
                           ignore=shutil.ignore_patterns('*.cache', 'README.md'))
    return write_data_yaml(Path(data), names, Path(folder) / 'data.yaml')


@functools.lru_cache(maxsize=None)
def embedded_dataset():
    """The embedded YOLO-format dataset (images/ and labels/ with train2017 and val2017), as a folder."""
    return _as_folder(_files() / 'data' / 'coco8', 'coco8')

