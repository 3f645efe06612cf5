"""Images as the detectors are fed them, for calibration, parity checks and benchmarks: letterboxed to a
square (resized to fit, centred, gray 114 around), RGB, NCHW float32 in [0, 1]. The same pixels as
YOLOv5's `LoadImages(..., auto=False)` (export.py --int8's calibration) and the Ultralytics
package's letterbox; host-free (numpy and OpenCV)."""
from pathlib import Path

IMAGE_SUFFIXES = ('.bmp', '.jpeg', '.jpg', '.png', '.tif', '.tiff', '.webp')


def letterbox_geometry(shape, size):
    """(scale, top, left) that letterboxing an image of `shape` (h, w) to `size` (H, W) applies: image
    pixel (x, y) lands at (x * scale + left, y * scale + top)."""
    (h, w), (height, width) = shape, size
    r = min(height / h, width / w)
    return r, (height - round(h * r)) // 2, (width - round(w * r)) // 2


def letterboxed(image, size):
    """An image file (or a BGR array) as (1, 3, H, W) float32 in [0, 1], RGB, letterboxed to `size`:
    an int for a square, or (H, W)."""
    import cv2
    import numpy as np
    img = cv2.imread(str(image)) if isinstance(image, (str, Path)) else image
    if img is None:
        raise FileNotFoundError(f'cannot read the image {image}')
    height, width = (size, size) if isinstance(size, int) else size
    h, w = img.shape[:2]
    r, top, left = letterbox_geometry((h, w), (height, width))
    new_w, new_h = round(w * r), round(h * r)
    if (new_w, new_h) != (w, h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((height, width, 3), 114, np.uint8)
    canvas[top:top + new_h, left:left + new_w] = img
    return np.ascontiguousarray(canvas[:, :, ::-1].transpose(2, 0, 1)[None], np.float32) / 255


def image_files(source):
    """The image files of a YOLO data split: a folder (sorted by name), a .txt list of files, an image,
    or a list of those."""
    files = []
    for item in map(Path, source if isinstance(source, (list, tuple)) else [source]):
        if item.is_dir():
            files += sorted(f for f in item.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif item.suffix == '.txt':
            files += [item.parent / line.strip() for line in item.read_text().splitlines() if line.strip()]
        else:
            files.append(item)
    return files


def letterboxed_images(source, size, n=None):
    """The first `n` (default all) images of `source` (image_files), each letterboxed(): a list of
    (1, 3, size, size) arrays."""
    files = image_files(source)[:n]
    if not files:
        raise FileNotFoundError(f'no images in {source}')
    return [letterboxed(f, size) for f in files]


def write_pngs(images, folder):
    """Write NCHW float images in [0, 1] (batch 1, RGB, from 8-bit images) to `folder` as 0000.png, ...
    (8-bit BGR files, exact); returns their paths. For the converters that read calibration files."""
    import cv2
    import numpy as np
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        rgb = np.rint(np.asarray(im)[0].transpose(1, 2, 0) * 255).clip(0, 255).astype(np.uint8)
        paths.append(folder / f'{i:04d}.png')
        cv2.imwrite(str(paths[-1]), rgb[:, :, ::-1])
    return paths
