"""The one error family of spikeport.

Library code raises these; only `spikeport.cli` turns them into a line on stderr and an
exit code (2 for bad input, 1 for a check that failed).
"""


class SpikeportError(Exception):
    """Base class: a problem the user can act on, described in one line."""

    exit_code = 2


class BadInput(SpikeportError):
    """A file, key, shape or option the user gave is wrong."""


class UnsupportedOp(SpikeportError):
    """A node has no treatment in spikeport (names the node and its op type)."""


class FormatError(BadInput):
    """A .spk artifact is malformed, of another version, or inconsistent."""


class CapabilityExceeded(SpikeportError):
    """A graph does not fit a target profile: bits, fan-in, op, or proven overflow."""


class SimulationOverflow(SpikeportError):
    """The integer simulator saw a value leave its declared bit width."""


class CheckFailed(SpikeportError):
    """A requested check (accuracy bar, bit-exact comparison) did not hold."""

    exit_code = 1
