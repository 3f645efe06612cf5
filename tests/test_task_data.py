"""tests/tools/make_task_data.py: the generated seg and classify sets are deterministic and what they say."""
import math

from make_task_data import VERTICES, make_classify, make_seg, read_boxes
from yolov5_mnv4.resources import embedded_dataset

COCO8 = embedded_dataset()


def digest(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def test_seg_polygons_are_the_boxes_inscribed_ellipses(tmp_path):
    make_seg(COCO8, tmp_path / 'a')
    make_seg(COCO8, tmp_path / 'b')
    assert digest(tmp_path / 'a') == digest(tmp_path / 'b')
    checked = 0
    for label in sorted((tmp_path / 'a' / 'labels').rglob('*.txt')):
        boxes = read_boxes(COCO8 / 'labels' / label.parent.name / label.name)
        rows = [line.split() for line in label.read_text().splitlines()]
        assert [int(r[0]) for r in rows] == [b[0] for b in boxes]
        for (c, x, y, w, h), row in zip(boxes, rows):
            xs, ys = [float(v) for v in row[1::2]], [float(v) for v in row[2::2]]
            assert len(xs) == len(ys) == VERTICES
            assert min(xs) >= max(x - w / 2, 0) - 1e-6 and max(xs) <= min(x + w / 2, 1) + 1e-6
            assert min(ys) >= max(y - h / 2, 0) - 1e-6 and max(ys) <= min(y + h / 2, 1) + 1e-6
            # the first vertex is the ellipse's right end (clipped to the image)
            assert math.isclose(xs[0], min(x + w / 2, 1.0), abs_tol=1e-6)
            checked += 1
    assert checked > 20


def test_classify_folder_holds_crops_of_the_most_frequent_classes(tmp_path):
    names = {i: f'c{i}' for i in range(80)}
    made = make_classify(COCO8, tmp_path / 'a', 2, 5, names)
    assert made == make_classify(COCO8, tmp_path / 'b', 2, 5, names)
    assert digest(tmp_path / 'a') == digest(tmp_path / 'b')
    classes = {k.split('/')[1] for k in made}
    assert len(classes) == 2 and all(0 < n <= 5 for n in made.values())
    assert sorted({p.parent.parent.name for p in (tmp_path / 'a').rglob('*.jpg')}) == sorted(
        {k.split('/')[0] for k in made})
