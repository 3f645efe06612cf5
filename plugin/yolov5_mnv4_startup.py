"""Lets the Ultralytics package's own `yolo` command (and any Python process) build and load the
MobileNetV4 models without `import yolov5_mnv4` first, DDP workers included.

`yolov5_mnv4_startup.pth`, installed beside this module, imports it when Python starts. All it does is
put one finder on `sys.meta_path` that waits for `ultralytics.nn.tasks`: a process that never imports
the Ultralytics package never imports the plugin either. When `ultralytics.nn.tasks` is imported, the
finder imports `yolov5_mnv4`, whose import hook registers the plugin into the module right after it
runs. It never touches a YOLOv5 checkout: there `yolov5-mnv4 apply` stays the only switch.

Switch it off with YOLOV5_MNV4_STARTUP=0. A failure inside the plugin is reported as a warning: the
host's own import always goes on.
"""
import os
import sys

TARGET = 'ultralytics.nn.tasks'
SWITCH = 'YOLOV5_MNV4_STARTUP'


class UltralyticsFinder:
    """Finds nothing itself: on the import of TARGET it hands over to the plugin's own import hook."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != TARGET:
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        try:
            import yolov5_mnv4  # noqa: F401 (arms its hook for TARGET at the front of sys.meta_path)
            from yolov5_mnv4.hosts.import_hook import hook_for
            hook = hook_for(TARGET)
            return hook.find_spec(fullname, path, target) if hook is not None else None
        except Exception as err:  # noqa: BLE001 (the host's import must go on)
            import warnings
            warnings.warn(f'yolov5-mnv4: could not arm the plugin for {TARGET} ({type(err).__name__}: {err}); '
                          f'MobileNetV4 models will not build (set {SWITCH}=0 to silence this)', RuntimeWarning)
            return None


def arm():
    """Put the finder on sys.meta_path, unless switched off or already there."""
    if os.environ.get(SWITCH, '1').strip().lower() in ('0', 'false', 'no', 'off'):
        return
    if TARGET in sys.modules or any(isinstance(f, UltralyticsFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, UltralyticsFinder())


arm()
