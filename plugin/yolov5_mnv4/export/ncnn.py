"""NCNN: the export (pnnx, from a TorchScript trace) and its runner."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from .formats import Runner, require

NCNN_FILES = ('model.ncnn.param', 'model.ncnn.bin')  # pnnx's names, which Ultralytics' NCNN folders keep


def trace(model, im):
    """TorchScript of `model` traced on `im` (the explicit attention: layers.exporting() is True)."""
    import torch
    with torch.no_grad():
        return torch.jit.trace(model, im, strict=False, check_trace=False)


def export_ncnn(model, im, folder, half=False):
    """`folder`/model.ncnn.param and .bin, written by pnnx from a TorchScript trace; `half` stores the
    weights in fp16 (pnnx's default), else fp32. pnnx's intermediate files are removed."""
    require('ncnn')
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    script = folder / 'model.torchscript'
    trace(model, im).save(str(script))
    shape = ','.join(str(s) for s in im.shape)
    pnnx = shutil.which('pnnx') or str(Path(sys.executable).with_name('pnnx'))
    proc = subprocess.run([pnnx, str(script.resolve()), f'inputshape=[{shape}]', f'fp16={int(half)}'],
                          cwd=folder, capture_output=True, text=True)
    missing = [name for name in NCNN_FILES if not (folder / name).is_file()]
    if proc.returncode != 0 or missing:
        raise RuntimeError(f'pnnx failed (exit {proc.returncode}, missing {missing}):\n{(proc.stdout + proc.stderr)[-3000:]}')
    for path in folder.iterdir():
        if path.name not in NCNN_FILES:
            path.unlink()
    return folder


class NCNNModel(Runner):
    """An NCNN model folder (model.ncnn.param/.bin) as a function; `threads` CPU threads."""

    def __init__(self, folder, threads=2):
        require('ncnn')
        import ncnn
        self.ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.num_threads = threads
        folder = Path(folder)
        if self.net.load_param(str(folder / NCNN_FILES[0])) or self.net.load_model(str(folder / NCNN_FILES[1])):
            raise RuntimeError(f'NCNN could not load {folder}')
        self.input = None

    def set_input(self, x):
        # ncnn.Mat wraps the array's memory: clone() owns a copy, so no array has to outlive the call
        self.input = self.ncnn.Mat(np.ascontiguousarray(x, np.float32), batch_index=0).clone()

    def invoke(self):
        extractor = self.net.create_extractor()
        extractor.input('in0', self.input)
        status, out = extractor.extract('out0')
        if status != 0:
            raise RuntimeError(f'NCNN extract failed ({status})')
        return out

    def output(self, raw):
        return np.array(raw)[None]


RUNNER = NCNNModel
