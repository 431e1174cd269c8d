"""Labs that stay up: ``testbed lab up/exec/inspect/migrate/down/list``.

``lab up`` starts a supervisor (``testbed.labctl.supervisor``), a detached process in its own
session that owns the :class:`testbed.lab.Lab` (and the impairment appliance when the lab's
netem links need it) until ``lab down`` or SIGTERM. Each lab is named; its record lives in
``/run/testbed/labs/<name>.json`` beside the run registry's record of what it created, and
the supervisor answers on ``/run/testbed/labs/<name>.sock``.
"""
