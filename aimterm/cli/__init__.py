"""L5 front-end: the ``aimterm`` command line (click). Heavy modules are imported lazily."""
