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
REQUIRED_BLOCKS = {'README.md': {'benchmark.json headline', 'configs.json configs', 'benchmark_int8_attention.md slowdown'},
                   'docs/benchmarks.md': {'benchmark.json table', 'benchmark_command.json command-tables',
                                          'benchmark_edge_runtimes_*.md edge-runtime-ratios'},
                   'docs/export.md': {'parity.json+benchmark_edge_runtimes_*.md formats', 'parity.json runtime-parity',
                                      'parity.json executorch-outside', 'parity.json controls'},
                   'docs/ultralytics.md': {'ultralytics_parity_*.json parity'}}
# Project-internal talk that user-facing docs must not carry: performance targets, machines on loan,
# superseded runs and tests.
INTERNAL = re.compile(r'\(target|\btargets?\s*(?:<=|\d)|\blent\b|\bold test\b|\bearlier run\b', re.I)


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
    found = INTERNAL.findall(text)
    assert not found, f'{doc.name}: project-internal talk {found}'


def test_code_cites_nothing_outside_the_repository():
    files = [*REPO.glob('plugin/yolov5_mnv4/**/*.py'), *REPO.glob('scripts/*.py'), *REPO.glob('tests/**/*.py')]
    cited = [f.relative_to(REPO) for f in files if f != Path(__file__) and re.search(r'\breference/[A-Z_]+\.md',
                                                                                      f.read_text())]
    assert not cited, f'these cite ../shared/reference, which a clone does not have: {cited}'
