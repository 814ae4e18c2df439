"""Session hosts: a fleet's sessions spread over processes, one per core.

``placement`` (how many hosts, which takes an instance), ``link`` (the controller's end of
one host), ``proxy`` (the :class:`~aimterm.handle.SessionHandle` of a session in a host),
``server`` (the host process), ``wire`` (the link's frames).
"""
