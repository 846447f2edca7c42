"""One root for opsloop's errors, one subclass per area, and the CLI's exit codes.

Every error opsloop raises on purpose derives from :class:`OpsloopError`, whose message
is safe to show (it names a file and line, a field, a topic; never a secret). The
command line catches ``OpsloopError`` once and exits with the error's ``exit_code``:

====  =====================================================================
code  meaning
====  =====================================================================
0     done
1     the input or configuration is wrong: the message names the file and line,
      the field or the argument
2     the cluster's topics differ from topics.yaml (``opsloop topics apply``)
3     nothing found (``opsloop audit SESSION`` for an unknown session)
4     a service opsloop needs is unavailable (Kafka, the database, the broker
      jars): try again
5     data opsloop wrote cannot be read back (a record, a model artifact)
130   interrupted (Ctrl-C)
====  =====================================================================

Areas that need to be caught by a built-in type as well (a ``ValueError`` in a parser)
keep it as a second base.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_DIFFERS = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4
EXIT_CORRUPT = 5
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a Unix tool whose reader went away

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "done",
    EXIT_INVALID: "the input, configuration or command line is wrong (the message names the file and line, the field or the argument)",
    EXIT_DIFFERS: "something differs: the cluster's topics from topics.yaml (topics apply), a replay from its records",
    EXIT_NOT_FOUND: "nothing found (audit of an unknown session)",
    EXIT_UNAVAILABLE: "a service opsloop needs is unavailable (Kafka, the database, the broker jars): try again",
    EXIT_CORRUPT: "data opsloop wrote cannot be read back (a record, a model artifact)",
    EXIT_INTERRUPTED: "interrupted",
    EXIT_BROKEN_PIPE: "the output's reader went away (| head)",
}


class OpsloopError(Exception):
    """Base of every error opsloop raises on purpose; the message is safe to print."""

    exit_code = EXIT_INVALID


class InvalidInputError(OpsloopError):
    """Something a user or a producer gave is malformed: an event, an argument, a matcher."""


class ConfigError(InvalidInputError):
    """A configuration file is invalid; ``str()`` is ``file:line: reason``."""

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {reason}")


class NotFoundError(OpsloopError):
    """What was asked for does not exist."""

    exit_code = EXIT_NOT_FOUND


class TopicNotFoundError(NotFoundError, LookupError):
    """A topic named to read or write does not exist on the cluster (under the settings' topic prefix)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(f"topic {topic!r} does not exist (run `opsloop topics apply`)")


class UnavailableError(OpsloopError):
    """A service opsloop needs cannot be reached or started; retrying later may help."""

    exit_code = EXIT_UNAVAILABLE


def cannot_listen(host: str, port: int, exc: OSError) -> UnavailableError:
    """A server that cannot bind (the port in use, a host not on this machine): one line, exit code 4."""
    return UnavailableError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


class CorruptDataError(OpsloopError):
    """Data opsloop wrote (a Kafka record, a model artifact) cannot be read back."""

    exit_code = EXIT_CORRUPT


class DeliveryError(OpsloopError):
    """Base of the outcomes a sink's send can end in, other than success."""

    def __init__(self, reason: str, *, http_status: int | None = None) -> None:
        self.reason = reason
        self.http_status = http_status
        super().__init__(reason)


def exit_codes_help() -> str:
    """The exit-code table as the CLI's help epilog prints it."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())


class UsageParser(argparse.ArgumentParser):
    """argparse's usage errors exit 1 (the command line is wrong), not argparse's 2: opsloop's 2 says
    something differs (``topics apply``, ``replay``), and a script must not read a mistyped option as drift."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message}\n")
