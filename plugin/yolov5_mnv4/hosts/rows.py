"""The MobileNetV4 backbone row of a model YAML, as every host reads it (YOLOv5's models/*.yaml and
the Ultralytics package's configs alike): `[-1, 1, MobileNetV4ConvSmall, [weights]]`, or
`[-1, 1, MobileNetV4, [variant, weights]]`, first in the backbone, five layers (stem, /4, /8, /16, /32)
once expanded. Each host module turns the rows it finds here into layers its own parse_model builds.
"""
import copy
import difflib

from ..specs import get_variant

# Backbone row names accepted in YAML; 'MobileNetV4' takes the variant as its first argument.
BACKBONE_ROWS = {
    'MobileNetV4ConvSmall': 'conv_small',
    'MobileNetV4ConvMedium': 'conv_medium',
    'MobileNetV4ConvLarge': 'conv_large',
    'MobileNetV4HybridMedium': 'hybrid_medium',
    'MobileNetV4HybridLarge': 'hybrid_large',
    'MobileNetV4': None,
}
STAGES_PER_ROW = 5
STAGE_MODULE = 'MobileNetV4Stage'  # what the rows expand to (and what a host's exporter may meet)
VALID_ROWS = ('valid rows: ' + ', '.join(name for name in BACKBONE_ROWS if name != 'MobileNetV4')
              + ', or MobileNetV4 with the variant as its argument')


def check_module_names(d):
    """A row whose module looks like ours (MobileNetV4..., any case) but is not one we know would end
    in the host's NameError/KeyError pointing at an internal class: say which row, what was meant,
    what is valid."""
    known = [*BACKBONE_ROWS, STAGE_MODULE]
    for part in ('backbone', 'head'):
        for i, (f, n, module, args) in enumerate(d.get(part) or []):
            if isinstance(module, str) and module.lower().startswith('mobilenetv4') and module not in known:
                close = difflib.get_close_matches(module, known, n=1, cutoff=0.6) or difflib.get_close_matches(
                    module.lower(), [k.lower() for k in known], n=1, cutoff=0.6)
                meant = next((k for k in known if close and k.lower() == close[0].lower()), None)
                hint = f' (did you mean {meant}?)' if meant else ''
                raise ValueError(f'{part} row {i} {[f, n, module, args]}: unknown MobileNetV4 module '
                                 f'{module!r}{hint}; {VALID_ROWS}')


def backbone_variant(module, args):
    """(spec, remaining args) of a MobileNetV4 row; (None, args) for any other row."""
    if not isinstance(module, str) or module not in BACKBONE_ROWS:
        return None, args
    variant = BACKBONE_ROWS[module]
    if variant is None:
        if not args:
            raise ValueError('a MobileNetV4 row needs the variant as its first argument, '
                             'e.g. [-1, 1, MobileNetV4, [conv_small]]')
        variant, args = args[0], args[1:]
    return get_variant(variant), list(args)


def stage_rows(d):
    """Yield (row index, row, spec, weights-or-None) for every backbone row, spec None where the row is
    not ours; refuses a MobileNetV4 row in a place or shape that the five stage layers cannot take."""
    check_module_names(d)
    for i, (f, n, module, args) in enumerate(d['backbone']):
        variant, extra = backbone_variant(module, args)
        if variant is not None:
            if i != 0 or f != -1:
                raise ValueError(f'backbone row {i} {[f, n, module, args]}: the MobileNetV4 row must be the first '
                                 f'backbone row and read the image (from -1): its five stages become layers 0-4, '
                                 f"which the head's layer indices count on")
            if n != 1:
                raise ValueError(f'a MobileNetV4 backbone row takes number 1, not {n}')
            if len(extra) > 1:
                raise ValueError(f'a MobileNetV4 backbone row takes at most one argument (the pretrained '
                                 f'weights), got {extra}')
        yield i, [f, n, module, args], variant, (str(extra[0]) if variant is not None and extra else None)


def expand_stage_rows(d, stage_row):
    """A copy of the model dict with its MobileNetV4 backbone row replaced by one row per stage, layers
    0-4: `stage_row(spec, index, c_out, weights)` gives each stage row's (module, args), as the host's
    parse_model will build it."""
    rows = []
    for _, row, variant, weights in stage_rows(d):
        if variant is None:
            rows.append(row)
            continue
        for index, c_out in enumerate(variant.stage_out_channels()):
            rows.append([row[0] if index == 0 else -1, 1, *stage_row(variant, index, c_out, weights)])
    return {**d, 'backbone': rows}


def backbone_row(d):
    """Index of the first MobileNetV4 row of a model dict's backbone."""
    for i, (_, _, module, _) in enumerate(d['backbone']):
        if isinstance(module, str) and module in BACKBONE_ROWS:
            return i
    raise ValueError('the config has no MobileNetV4 backbone row (e.g. [-1, 1, MobileNetV4ConvSmall, []])')


def with_pretrained(d, source):
    """A copy of the model dict whose MobileNetV4 row loads its weights from `source` (None: from
    nowhere, the backbone is initialised as the host initialises layers)."""
    d = copy.deepcopy(d)
    row = d['backbone'][backbone_row(d)]
    variant, _ = backbone_variant(row[2], row[3])
    row[3] = ([variant.name] if row[2] == 'MobileNetV4' else []) + ([str(source)] if source else [])
    return d


def without_pretrained(d):
    """A copy of the model dict with no MobileNetV4 row naming a weights source."""
    d = copy.deepcopy(d)
    for row in d['backbone']:
        variant, extra = backbone_variant(row[2], row[3])
        if variant is not None and extra:
            row[3] = [variant.name] if row[2] == 'MobileNetV4' else []
    return d
