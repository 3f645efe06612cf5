"""The docs say what the committed results say: every generated block of the README and docs/ equals what
scripts/render_docs.py writes from docs/results, every result file they cite exists, and they cite
nothing outside the repository (a user's clone has only what it ships)."""
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'scripts'))
import render_docs  # noqa: E402

DOCS = render_docs.DOCS
# The blocks that carry the headline numbers: they must exist, not only agree when present.
REQUIRED_BLOCKS = {'README.md': {'benchmark.json headline', 'benchmark_command.json speed-summary', 'configs.json configs', 'benchmark_int8_attention.md slowdown'},
                   'docs/benchmarks.md': {'benchmark.json table', 'benchmark_command.json command-tables',
                                          'benchmark_edge_runtimes_*.md edge-runtime-ratios'},
                   'docs/export.md': {'parity.json+benchmark_edge.md+benchmark_edge_runtimes_*.md+benchmark_command.json formats', 'parity.json runtime-parity',
                                      'parity.json executorch-outside', 'parity.json controls', 'qat_*.json qat'},
                   'docs/ultralytics.md': {'ultralytics_parity_*.json parity'}}
# Project-internal talk that user-facing docs and result files must not carry: performance targets and
# their verdicts, machines on loan, superseded runs and tests, the work tracker; code and tests only the last.
ISSUE_TALK = r'\bissues? ?#?\d+\b|\bthe issue\b|(?-i:\bMISSED\b)'
INTERNAL = re.compile(r'\(target|\btargets?\s*(?:<=|\d)|\blent\b|\bold test\b|\bearlier run\b|\bmachines? we tried\b|'
                      + ISSUE_TALK, re.I)
RESULT_FILES = sorted((REPO / 'docs' / 'results').glob('*.md'))
CODE = [*REPO.glob('plugin/yolov5_mnv4/**/*.py'), *REPO.glob('scripts/*'), *REPO.glob('tests/**/*.py')]


def test_generated_blocks_equal_what_the_result_files_give():
    stale = render_docs.stale_blocks()
    assert not stale, f'out of date (run python scripts/render_docs.py): {stale}'


@pytest.mark.parametrize('doc', sorted(REQUIRED_BLOCKS))
def test_headline_numbers_are_generated(doc):
    blocks = {f'{source} {renderer}' for _, source, renderer, _, _ in render_docs.BLOCK.findall((REPO / doc).read_text())}
    assert REQUIRED_BLOCKS[doc] <= blocks, f'{doc} lacks the generated block(s) {REQUIRED_BLOCKS[doc] - blocks}'


def test_every_recorded_check_has_its_record():
    """The parity tables name no check whose record is missing from docs/results/parity.json (a test
    renamed or a record key changed would leave a hole there)."""
    holes = [(path.name, line) for path in DOCS for line in path.read_text().splitlines() if 'not recorded' in line]
    assert not holes, holes


def test_the_renderer_notices_a_changed_number(tmp_path, monkeypatch):
    """Control: a README whose generated table was edited by hand is reported."""
    readme = tmp_path / 'README.md'
    text = (REPO / 'README.md').read_text()
    first_row = next(line for line in text.splitlines() if line.startswith('| yolov5n (stock) |'))
    readme.write_text(text.replace(first_row, first_row.replace('|', '| 1', 2)))
    monkeypatch.setattr(render_docs, 'DOCS', [readme])
    monkeypatch.setattr(render_docs, 'REPO', tmp_path)
    assert render_docs.stale_blocks() == [(Path('README.md'), 'benchmark.json headline')]


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_cited_result_files_exist_and_nothing_outside_the_repository_is_cited(doc):
    text = doc.read_text()
    for cited in re.findall(r'docs/results/([\w.-]+\.(?:md|json|csv|png))', text):
        assert (REPO / 'docs' / 'results' / cited).is_file(), f'{doc.name} cites docs/results/{cited}'
    assert not re.search(r'\breference/[A-Z_]+\.md', text), f'{doc.name} cites a file a clone does not have'


def test_code_cites_nothing_outside_the_repository():
    files = [*REPO.glob('plugin/yolov5_mnv4/**/*.py'), *REPO.glob('scripts/*.py'), *REPO.glob('tests/**/*.py')]
    cited = [f.relative_to(REPO) for f in files if f != Path(__file__) and re.search(r'\breference/[A-Z_]+\.md',
                                                                                      f.read_text())]
    assert not cited, f'these cite ../shared/reference, which a clone does not have: {cited}'


@pytest.mark.parametrize('doc', [*DOCS, REPO / 'CONTRIBUTING.md', *RESULT_FILES], ids=lambda p: str(p.relative_to(REPO)))
def test_no_internal_talk_in_what_users_read(doc):
    found = INTERNAL.findall(doc.read_text())
    assert not found, f'{doc.relative_to(REPO)}: project-internal talk {found}'


def test_no_tracker_talk_in_code():
    talk = re.compile(ISSUE_TALK, re.I)
    found = [(f.relative_to(REPO), m) for f in CODE if f.is_file() and f != Path(__file__)
             for m in talk.findall(f.read_text(errors='replace'))]
    assert not found, found


def test_the_internal_talk_patterns_catch_what_they_are_for():
    """Control: each kind of talk the tests above refuse is caught in a sentence that has it, and plain
    user sentences are not."""
    for text in ('Conv-S/yolov5n @320 (target <= 0.8): 0.95  MISSED: tflite_int8', 'targets 0.8', 'as issue 11 found',
                 'the issue measured', 'the GPU machine we tried', 'on a lent machine', 'an earlier run'):
        assert INTERNAL.search(text), text
    for text in ('open an issue with the output of yolov5-mnv4 check', 'the target runtime', 'Conv-S / yolov5n 0.95',
                 'missed = detections it did not find'):
        assert not INTERNAL.search(text), text


def test_two_tables_never_state_one_ratio_differently():
    disagree = render_docs.conflicts()
    assert not disagree, disagree
    assert render_docs.STATED, 'no generated block stated a ratio: the check would pass on nothing'


def test_a_planted_disagreement_is_found(tmp_path):
    """Control: the command's result with its README summary (fair_ratios) changed for one ratio, so that
    the README and docs/benchmarks.md state that ratio differently; the check names it."""
    import json
    import shutil
    results = tmp_path / 'results'
    shutil.copytree(REPO / 'docs' / 'results', results)
    command = json.loads((results / 'benchmark_command.json').read_text())
    key = next(k for k in command['fair_ratios'] if k.startswith('onnxruntime_'))
    pair = next(iter(command['fair_ratios'][key]))
    command['fair_ratios'][key][pair]['median'] += 0.05
    (results / 'benchmark_command.json').write_text(json.dumps(command))
    found = render_docs.conflicts(results)
    assert [(p, r, s) for p, r, s, _ in found] == [(pair, 'onnxruntime', int(key.rsplit('_', 1)[1]))], found


def test_records_come_only_from_tests_that_pass(tmp_path):
    """The record fixture (conftest.py) in a pytest run of its own: a passing and a failing test each
    record a number; MNV4_RECORD's file gets the first and not the second."""
    import json
    import os
    import subprocess
    (tmp_path / 'conftest.py').write_text(
        'import importlib.util\n'
        f'spec = importlib.util.spec_from_file_location("mnv4_conftest", {str(REPO / "tests" / "conftest.py")!r})\n'
        'module = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(module)\n'
        'record, pytest_runtest_makereport, pytest_sessionfinish = '
        'module.record, module.pytest_runtest_makereport, module.pytest_sessionfinish\n')
    (tmp_path / 'test_measures.py').write_text(
        'def test_passes(record):\n    record("kept", value=1.0)\n\n'
        'def test_fails(record):\n    record("dropped", value=2.0)\n    assert False\n')
    out = tmp_path / 'records.json'
    run = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'test_measures.py'],
                         cwd=tmp_path, env={**os.environ, 'MNV4_RECORD': str(out)}, capture_output=True, text=True)
    assert '1 failed, 1 passed' in run.stdout, run.stdout + run.stderr
    assert set(json.loads(out.read_text())['records']) == {'kept'}


def test_quick_lane_leaves_out_the_slow_modules_and_only_those():
    """`scripts/test.sh --quick` is `pytest -m "not slow"`: it must keep the core and the host's fast
    tests and drop every module conftest.SLOW_MODULES names; the full collection (the control) has them."""
    import subprocess
    import sys

    from conftest import SLOW_MODULES

    def modules(*args):
        out = subprocess.run([sys.executable, '-m', 'pytest', '--collect-only', '-q', '-p', 'no:cacheprovider', *args],
                             cwd=REPO, capture_output=True, text=True, timeout=300).stdout
        return {line.split('::')[0].rsplit('/', 1)[-1][:-3] for line in out.splitlines() if '::' in line}
    quick, everything = modules('-m', 'not slow'), modules()
    assert SLOW_MODULES <= everything, SLOW_MODULES - everything
    assert not quick & SLOW_MODULES, quick & SLOW_MODULES
    assert quick == everything - SLOW_MODULES
    assert {'test_model', 'test_apply', 'test_yolov5', 'test_bad_input', 'test_docs'} <= quick


def test_ruff_finds_nothing(tmp_path):
    """The lint that pyproject.toml configures (pyflakes, pycodestyle's E4/E7/E9, import sorting) is clean;
    control: the same configuration flags a file with an unused import and unsorted imports."""
    import subprocess

    from helpers import require
    require('ruff')
    from ruff.__main__ import find_ruff_bin
    result = subprocess.run([find_ruff_bin(), 'check', '--no-cache', '.'], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
    bad = tmp_path / 'bad.py'
    bad.write_text('import sys\nimport os\n')
    control = subprocess.run([find_ruff_bin(), 'check', '--no-cache', '--config', str(REPO / 'pyproject.toml'),
                              '--output-format', 'concise', str(bad)], capture_output=True, text=True)
    assert control.returncode == 1 and 'F401' in control.stdout and 'I001' in control.stdout, control.stdout
