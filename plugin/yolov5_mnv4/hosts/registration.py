"""What registering into a host means, for both hosts (hosts/yolov5.py, hosts/ultralytics.py): the
host's functions are replaced by wrappers that carry the original (`_mnv4_wraps`), so registration is
idempotent and a reloaded host module, whose functions are its own again, counts as unregistered; a
host that lacks a name we wrap is refused with the versions we support; our log lines go to the
host's logger. Imports nothing heavy."""
import logging

MARK = '_mnv4_wraps'


def is_registered(module, function='parse_model'):
    """Whether `module.function` is our wrapper now (keyed on the function itself)."""
    return getattr(getattr(module, function, None), MARK, None) is not None


def mark(wrapper, original):
    """Make `wrapper` known as ours, wrapping `original`; returns it."""
    setattr(wrapper, MARK, original)
    return wrapper


def require_names(module, names, unsupported, supported=None):
    """RuntimeError `{unsupported}: {module} has no ...; yolov5-mnv4 supports {supported}` unless
    `module` has every name in `names`."""
    missing = [name for name in names if not hasattr(module, name)]
    if missing:
        also = f'; yolov5-mnv4 supports {supported}' if supported else ''
        raise RuntimeError(f'{unsupported}: {module.__name__} has no {", ".join(missing)}{also}')


def host_logger(module):
    """The host's LOGGER, so that our lines appear with its own; ours where it has none."""
    return getattr(module, 'LOGGER', None) or logging.getLogger('yolov5_mnv4')
