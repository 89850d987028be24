"""Run by ``site`` when PyFlink's embedded interpreter starts (``--execution-mode thread``):
imports the jobs' Python modules on pemja's main interpreter thread, before any operator opens.

Why: in thread mode every Python operator of a task chain gets its own thread state on the
task's one Java thread. A C extension whose initialisation calls ``PyGILState_Ensure`` (the
pybind11 modules of scipy, imported through scikit-learn) then waits for the GIL its own
thread already holds under the other thread state, and every other operator waits on the
import lock behind it: the job hangs at start-up with no error (seen in about one run in eight;
gdb showed ``PyInit__distance_pybind`` -> ``PyGILState_Ensure`` -> ``take_gil``). Imported here,
on a thread with a single thread state, they are initialised once and for all. See
docs/decisions/0006-python-execution-mode.md.

``flink_jobs.env`` puts this folder on ``PYTHONPATH`` and sets ``STREAMSHARD_THREAD_BOOT`` only
for a thread-mode job. An interpreter embedded in the JVM has no command line
(``sys.orig_argv`` is empty); the ``python -c`` helpers Flink starts with the same environment
have one, and they, like any other interpreter that finds this file, import nothing.
"""

import os
import sys

if os.environ.get("STREAMSHARD_THREAD_BOOT") == "1" and not sys.orig_argv:
    try:
        # scikit-learn and scipy first, by name: the operators import them only when they
        # first hash (connectors.hashing), which must not happen on an operator's thread
        import scipy.sparse  # noqa: F401
        import sklearn.feature_extraction  # noqa: F401
        import sklearn.utils  # noqa: F401

        # and pyarrow (its compute functions too), which the parser imports only for
        # --input-format arrow: a lazy import on an operator's thread hung the job
        import connectors.arrow_records  # noqa: F401
        import operators.evaluate_fn  # noqa: F401
        import operators.parse_fn  # noqa: F401
        import operators.ps_fn  # noqa: F401
        import operators.serve_fn  # noqa: F401
        import operators.shard_fn  # noqa: F401
        import operators.validate_fn  # noqa: F401
        import operators.worker_fn  # noqa: F401
    except Exception as exc:  # never stop the interpreter from starting; the job will say why
        print(f"streamshard: thread-mode pre-import failed: {exc!r}", file=sys.stderr)
