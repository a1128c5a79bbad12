"""The exit statuses every command-line tool of the project uses.

0 success; 2 a usage or input error the user can fix (bad flags, a malformed file, a request
the server refused with 4xx); 1 anything unexpected (server failure, lost connection, a bug);
130 interrupted (Ctrl-C). Errors print one line to stderr, never a traceback.
"""

from __future__ import annotations

__all__ = ["EXIT_INTERRUPTED", "EXIT_OK", "EXIT_UNEXPECTED", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
