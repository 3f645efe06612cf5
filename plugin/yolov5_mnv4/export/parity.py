"""How far an exported detector is from the fused PyTorch model, in the measures the export command
prints and the tests bound: for float exports the largest box and score errors, for int8 ones the
signal-to-noise ratio of the scores per output level and the agreement of the detections after NMS.

Outputs are YOLOv5's (1, anchors, 5 + classes) arrays, PyTorch layout. Host-free: `nms` does what
YOLOv5's `utils.general.non_max_suppression` does with its defaults, on one image.
"""
import numpy as np

from .tflite import level_snr_db

AGREEMENT_CONF = 0.1  # NMS confidence threshold of detection_agreement
AGREEMENT_IOU = 0.5  # a box agrees with a reference box of the same class that it overlaps this much


def detection_errors(got, ref):
    """(largest box error / largest box coordinate, largest score error) of YOLOv5 outputs."""
    got, ref = np.asarray(got, np.float64).reshape(ref.shape), np.asarray(ref, np.float64)
    boxes = float(np.abs(got[..., :4] - ref[..., :4]).max() / np.abs(ref[..., :4]).max())
    return boxes, float(np.abs(got[..., 4:] - ref[..., 4:]).max())


def score_snr_db(outputs, refs, strides, anchors_per_cell, imgsz):
    """Per output level, the signal-to-noise ratio (dB) of the scores (objectness and classes) of
    `outputs` against `refs` (one (anchors, 5 + classes) block per image), averaged over the images.

    Scores, not boxes: int8 keeps a trained model's scores within ~24 dB of fp32 on every level, while
    its large-anchor boxes move more (TFLite's Detect runs its wh arithmetic in int8), and a broken
    graph moves boxes less than that and scores much more (tests/data/README.md)."""
    return np.mean([level_snr_db(np.asarray(o).reshape(np.shape(r))[None, :, 4:], np.asarray(r)[None, :, 4:],
                                 strides, anchors_per_cell, imgsz) for o, r in zip(outputs, refs)], axis=0)


NMS_IOU, MAX_DET, MAX_NMS, MAX_WH = 0.45, 300, 30000, 7680  # YOLOv5's non_max_suppression defaults


def nms(pred, conf=AGREEMENT_CONF, iou=NMS_IOU, multi_label=False):
    """The detections (n, 6: x1 y1 x2 y2 confidence class) of one image's YOLOv5 output `pred`
    ((1, anchors, 5 + classes)), as YOLOv5's non_max_suppression finds them: objectness above `conf`,
    confidence objectness x class score above `conf` (the best class, or with `multi_label` every class
    above it, as val.py asks), class-wise NMS at IoU `iou`, the best MAX_DET by confidence."""
    import torch
    from torchvision.ops import nms as nms_indices
    p = torch.from_numpy(np.ascontiguousarray(pred, np.float32)).reshape(-1, np.shape(pred)[-1])
    p = p[p[:, 4] > conf]
    scores = p[:, 5:] * p[:, 4:5]
    boxes = torch.cat([p[:, :2] - p[:, 2:4] / 2, p[:, :2] + p[:, 2:4] / 2], 1)
    if multi_label:
        i, j = (scores > conf).nonzero(as_tuple=False).T
        boxes, confidence, cls = boxes[i], scores[i, j], j
    else:
        confidence, cls = scores.max(1)  # class-wise NMS by offsetting each class's boxes
        keep = confidence > conf
        boxes, confidence, cls = boxes[keep], confidence[keep], cls[keep]
    order = confidence.argsort(descending=True)[:MAX_NMS]
    boxes, confidence, cls = boxes[order], confidence[order], cls[order]
    kept = nms_indices(boxes + cls[:, None].float() * MAX_WH, confidence, iou)[:MAX_DET]  # as YOLOv5 rounds
    return torch.cat([boxes[kept], confidence[kept, None], cls[kept, None].float()], 1)


def matched(reference, other, iou=AGREEMENT_IOU):
    """How many reference boxes an `other` box of the same class overlaps by IoU >= iou, one to one."""
    from torchvision.ops import box_iou
    if not len(reference) or not len(other):
        return 0
    overlaps = box_iou(reference[:, :4], other[:, :4])
    overlaps[reference[:, 5:6] != other[:, 5].view(1, -1)] = 0
    used, hits = set(), 0
    for i in range(len(reference)):  # reference boxes come sorted by confidence
        for j in overlaps[i].argsort(descending=True).tolist():
            if overlaps[i, j] < iou:
                break
            if j not in used:
                used.add(j)
                hits += 1
                break
    return hits


def detection_agreement(outputs, refs):
    """(recall, precision, reference boxes): boxes after NMS (conf 0.1) of `outputs` matching those of
    `refs` (same class, IoU >= 0.5, one to one)."""
    ref_boxes = got_boxes = hits = 0
    for got, ref in zip(outputs, refs):
        got = np.asarray(got).reshape(np.shape(ref))
        ref_det, got_det = nms(np.asarray(ref)[None]), nms(got[None])
        ref_boxes, got_boxes, hits = ref_boxes + len(ref_det), got_boxes + len(got_det), hits + matched(ref_det, got_det)
    return hits / max(ref_boxes, 1), hits / max(got_boxes, 1), ref_boxes


def int8_report(outputs, refs, strides, anchors_per_cell, imgsz):
    """(score SNR per level, recall, precision, reference boxes, one line saying them)."""
    snr = score_snr_db(outputs, refs, strides, anchors_per_cell, imgsz)
    recall, precision, ref_boxes = detection_agreement(outputs, refs)
    levels = '/P'.join(str(int(s).bit_length() - 1) for s in strides)
    line = (f'score signal-to-noise per level (P{levels}) ' + ' / '.join(f'{db:.1f}' for db in snr)
            + f' dB; detections (conf {AGREEMENT_CONF}, same class, IoU >= {AGREEMENT_IOU}): recall {recall:.2f} '
            f'of {ref_boxes} fp32 boxes, precision {precision:.2f}')
    return snr, recall, precision, ref_boxes, line
