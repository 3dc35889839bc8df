"""The variables view while no cell is stopped: the user namespace, shown the way pydevd shows a frame.

JupyterLab's variable explorer asks `inspectVariables` (and `variables` to expand an entry) whether or
not a cell is stopped. With no stopped frame to ask pydevd about, this presents the user namespace as
the globals of a stand-in frame, through pydevd's own variable tracker, so values, types, expandable
children and their references look exactly as they do at a breakpoint. Imports pydevd (via debugpy).
"""

from __future__ import annotations

import threading


class _Code:
    co_filename = "<ipymini user namespace>"
    co_name = "<module>"


class _Frame:
    """A stand-in frame whose globals and locals are the user namespace."""

    f_code = _Code()
    f_back = None
    f_lineno = 0

    def __init__(self, namespace: dict):
        self.f_globals = self.f_locals = namespace


class VariableExplorer:
    """Variables of one snapshot of the user namespace, with references to expand their children."""

    _lock = threading.Lock()

    def __init__(self, namespace: dict, visible):
        from ipymini.debugging.dap import import_debugpy

        import_debugpy()
        from _pydevd_bundle import pydevd_frame_utils
        from _pydevd_bundle.pydevd_api import PyDevdAPI
        from _pydevd_bundle.pydevd_suspended_frames import (
            SuspendedFramesManager,
            _FramesTracker,
        )

        class _PyDB:  # what the tracker reads from a debugger: how to present variables
            variable_presentation = PyDevdAPI.VariablePresentation()

        self.visible = visible
        self.frame = _Frame(namespace)
        self.manager = SuspendedFramesManager()
        self.tracker = _FramesTracker(self.manager, _PyDB())
        self.tracker.track("ipymini-namespace", pydevd_frame_utils.create_frames_list_from_frame(self.frame))

    def children(self, reference) -> list[dict]:
        """The variables under `reference` (the namespace itself for None or 0)."""
        top = not reference
        ref = id(self.frame) if top else reference
        with self._lock:
            try:
                variable = self.manager.get_variable(ref)
            except KeyError:
                return []
            found = [v.get_var_data() for v in variable.get_children_variables()]
        return [v for v in found if self.visible(v["name"])] if top else found
