"""The apply script and the patches: idempotent, reversible byte for byte, refusing cleanly."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import pristine_copy, tree_digest
from yolov5_mnv4 import __version__
from yolov5_mnv4.hosts import yolov5_tree as apply_module
from yolov5_mnv4.hosts.yolov5_tree import (
    EARLIER_HOOKS,
    HOOK_BLOCK,
    ApplyError,
    applied_version,
    apply,
    config_digest,
    patch_for,
    plugin_configs,
    shipped_configs,
)

REPO = Path(__file__).resolve().parents[1]
PATCHES = {'v7.0': REPO / 'patches' / 'yolov5-v7.0.patch', 'master': REPO / 'patches' / 'yolov5-master.patch'}


@pytest.fixture
def pristine(yolov5_dir, tmp_path):
    """A copy of the YOLOv5 tree without the plugin."""
    tree = pristine_copy(yolov5_dir, tmp_path / 'yolov5')
    assert not (tree / 'models' / 'mnv4').exists()
    return tree


def test_apply_is_idempotent_and_revert_restores_every_byte(pristine):
    before = tree_digest(pristine)
    changed = apply(pristine).changed
    assert 'models/yolo.py' in changed and 'models/mnv4/yolov5_mobilenetv4.yaml' in changed
    once = tree_digest(pristine)
    assert once != before
    assert apply(pristine).changed == []
    assert tree_digest(pristine) == once
    apply(pristine, revert=True)
    assert tree_digest(pristine) == before
    assert apply(pristine, revert=True).changed == []


def test_a_tree_an_earlier_version_applied_is_upgraded_and_reverted(pristine):
    before = tree_digest(pristine)
    yolo_py = pristine / 'models' / 'yolo.py'
    apply(pristine)
    current = yolo_py.read_text()
    assert '(yolov5-mnv4 0.' in current  # the hook names the plugin version that wrote it
    assert applied_version(current) == __version__
    for version, earlier in EARLIER_HOOKS.items():
        yolo_py.write_text(current.replace(HOOK_BLOCK, earlier + '\n\n'))
        assert applied_version(yolo_py.read_text()) == version
        assert apply(pristine).changed == ['models/yolo.py'] and yolo_py.read_text() == current
        yolo_py.write_text(current.replace(HOOK_BLOCK, earlier + '\n\n'))
        apply(pristine, revert=True)
        assert tree_digest(pristine) == before
        apply(pristine)


def test_cli_reports_and_refuses(pristine, tmp_path):
    script = [sys.executable, '-m', 'yolov5_mnv4', 'apply']
    ok = subprocess.run([*script, str(pristine)], capture_output=True, text=True)
    assert ok.returncode == 0 and 'applied' in ok.stdout
    again = subprocess.run([*script, str(pristine)], capture_output=True, text=True)
    assert again.returncode == 0 and 'already applied' in again.stdout
    bad = subprocess.run([*script, str(tmp_path / 'nowhere')], capture_output=True, text=True)
    assert bad.returncode == 2 and 'is not a folder' in bad.stderr and 'nothing was changed' in bad.stderr


def test_refuses_a_folder_that_is_not_yolov5(tmp_path):
    (tmp_path / 'models').mkdir()
    (tmp_path / 'models' / 'yolo.py').write_text('print("hi")\n')
    before = tree_digest(tmp_path)
    with pytest.raises(ApplyError, match='not a YOLOv5 checkout'):
        apply(tmp_path)
    assert tree_digest(tmp_path) == before


def test_refuses_an_unsupported_version_untouched(pristine):
    yolo_py = pristine / 'models' / 'yolo.py'
    yolo_py.write_text(yolo_py.read_text().replace('class DetectionModel(BaseModel)', 'class Model(nn.Module)'))
    before = tree_digest(pristine)
    with pytest.raises(ApplyError, match='unsupported YOLOv5 version'):
        apply(pristine)
    assert tree_digest(pristine) == before


def test_refuses_the_pypi_package_layout(pristine):
    yolo_py = pristine / 'models' / 'yolo.py'
    yolo_py.write_text(yolo_py.read_text().replace('from models.common import', 'from yolov5.models.common import'))
    with pytest.raises(ApplyError, match='PyPI yolov5 package'):
        apply(pristine)


def test_refuses_an_edited_hook(pristine):
    apply(pristine)
    yolo_py = pristine / 'models' / 'yolo.py'
    yolo_py.write_text(yolo_py.read_text().replace('_mnv4.register(', '_mnv4.register (', 1))
    before = tree_digest(pristine)
    with pytest.raises(ApplyError, match='edited yolov5-mnv4 hook'):
        apply(pristine, revert=True)
    assert tree_digest(pristine) == before


def test_failed_write_rolls_back(pristine, monkeypatch):
    before = tree_digest(pristine)
    real_write = Path.write_bytes

    def failing_write(self, data):
        if self.name == 'yolo.py':
            raise OSError('disk full')
        return real_write(self, data)

    monkeypatch.setattr(Path, 'write_bytes', failing_write)
    with pytest.raises(OSError):
        apply(pristine)
    monkeypatch.undo()
    assert tree_digest(pristine) == before
    assert not (pristine / 'models' / 'mnv4').exists()


def _added_lines(patch, path):
    """The '+' lines of one file's diff in a git patch."""
    lines, inside = [], False
    for line in patch.splitlines(keepends=True):
        if line.startswith('diff --git '):
            inside = line.split()[-1] == f'b/{path}'
        elif inside and line.startswith('+') and not line.startswith('+++'):
            lines.append(line[1:])
    return ''.join(lines)


@pytest.mark.parametrize('ref', list(PATCHES))
def test_patch_files_carry_the_same_change_as_the_script(ref):
    patch = PATCHES[ref].read_text()
    assert _added_lines(patch, 'models/yolo.py') == HOOK_BLOCK
    assert not [line for line in patch.splitlines() if line.startswith('-') and not line.startswith('---')]  # only adds
    for rel, content in plugin_configs().items():
        assert _added_lines(patch, rel.as_posix()) == content.decode(), f'{rel} in {PATCHES[ref].name} is stale'


def test_v70_patch_applies_like_the_script(pristine, tmp_path):
    by_git = tmp_path / 'by-git'
    shutil.copytree(pristine, by_git)
    subprocess.run(['git', 'apply', '--unsafe-paths', '--directory', '', str(PATCHES['v7.0'])], cwd=by_git,
                   check=True, capture_output=True)
    # The script's own diff of this tree is the shipped patch, up to hunk line numbers and blob ids,
    # which differ between a clone and the PyPI-built tree (license header, prefixed imports).
    assert _without_positions(patch_for(pristine)) == _without_positions(PATCHES['v7.0'].read_text())
    apply(pristine)
    assert tree_digest(by_git) == tree_digest(pristine)


def _without_positions(patch):
    return [line for line in patch.splitlines() if not line.startswith(('@@', 'index '))]


# --- the user's own configs ---------------------------------------------------------------------

CONV_S = 'models/mnv4/yolov5-mnv4-conv-s.yaml'


def test_every_config_version_is_recorded_as_shipped():
    recorded = shipped_configs()
    for path in sorted((REPO / 'models').glob('*.yaml')):
        assert (config_digest(path.read_bytes()), path.name) in recorded, \
            f'{path.name} changed: run tests/tools/record_configs.py'


def test_an_edited_config_is_kept_by_apply_and_by_revert(pristine):
    apply(pristine)
    mine = (pristine / CONV_S).read_bytes() + b'# nc: 3 for my data\n'
    (pristine / CONV_S).write_bytes(mine)
    again = apply(pristine)
    assert again.changed == [] and again.kept == [CONV_S]
    reverted = apply(pristine, revert=True)
    assert reverted.kept == [CONV_S] and 'models/yolo.py' in reverted.changed
    assert (pristine / CONV_S).read_bytes() == mine
    assert [p.name for p in (pristine / 'models' / 'mnv4').iterdir()] == ['yolov5-mnv4-conv-s.yaml']
    assert '# yolov5-mnv4' not in (pristine / 'models' / 'yolo.py').read_text()


def test_a_users_file_under_our_name_is_kept_and_force_saves_it_first(pristine):
    target = pristine / CONV_S
    target.parent.mkdir(parents=True)
    target.write_text('# my own model\n')
    assert apply(pristine).kept == [CONV_S] and target.read_text() == '# my own model\n'
    forced = apply(pristine, force=True)
    assert forced.backups == [CONV_S + '.bak'] and forced.kept == []
    assert (pristine / (CONV_S + '.bak')).read_text() == '# my own model\n'
    assert target.read_bytes() == (REPO / 'models' / 'yolov5-mnv4-conv-s.yaml').read_bytes()
    target.write_text('# edited again\n')
    assert apply(pristine, force=True).backups == [CONV_S + '.bak1']  # an earlier backup is never overwritten
    reverted = apply(pristine, revert=True)
    assert reverted.kept == []  # the config is ours again
    assert sorted(p.name for p in (pristine / 'models' / 'mnv4').iterdir()) == [
        'yolov5-mnv4-conv-s.yaml.bak', 'yolov5-mnv4-conv-s.yaml.bak1']


def test_an_older_shipped_version_is_upgraded_without_a_backup(pristine, monkeypatch):
    old = b'# yolov5-mnv4 0.0.1 config\n'
    monkeypatch.setattr(apply_module, 'shipped_configs',
                        lambda: shipped_configs() | {(config_digest(old), 'yolov5-mnv4-conv-s.yaml')})
    (pristine / CONV_S).parent.mkdir(parents=True)
    (pristine / CONV_S).write_bytes(old)
    outcome = apply(pristine)
    assert CONV_S in outcome.changed and outcome.kept == [] and outcome.backups == []
    assert (pristine / CONV_S).read_bytes() == (REPO / 'models' / 'yolov5-mnv4-conv-s.yaml').read_bytes()


def test_cli_names_kept_files_and_backups(pristine):
    script = [str(Path(sys.executable).parent / 'yolov5-mnv4-apply'), str(pristine)]  # the console command
    assert subprocess.run(script, capture_output=True).returncode == 0
    (pristine / CONV_S).write_text('# mine\n')
    kept = subprocess.run(script, capture_output=True, text=True)
    assert kept.returncode == 0
    assert (f'yolov5-mnv4-apply: kept {CONV_S}: it differs from every version yolov5-mnv4 shipped (your edits?), so '
            f'it was not replaced; --force replaces it after saving a copy as .bak') in kept.stderr
    forced = subprocess.run([*script, '--force'], capture_output=True, text=True)
    assert forced.returncode == 0
    assert f'yolov5-mnv4-apply: saved your version of {CONV_S} as {CONV_S}.bak' in forced.stdout
    both = subprocess.run([*script, '--force', '--revert'], capture_output=True, text=True)
    assert both.returncode == 2 and '--revert never deletes a config you edited' in both.stderr


def test_check_reports_the_tree_its_patch_and_the_runtimes(pristine):
    from yolov5_mnv4.cli.check import report
    before = report(pristine)
    assert 'not patched' in before and f'yolov5-mnv4   {__version__}' in before
    apply(pristine)
    after = report(pristine)
    assert f'patched by yolov5-mnv4 {__version__}, 15 configs in models/mnv4' in after
    for line in ('torch ', 'ONNX Runtime', 'TensorFlow', 'LiteRT', 'OpenVINO'):
        assert f'\n{line}' in after, after
