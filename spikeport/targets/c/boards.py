"""Memory profiles of the boards `emit --target c --board` knows, from their data sheets.

The fit check runs before anything is written: the model's const data against the board's
flash, and its state struct plus step arenas against its RAM. Code (a few KB of loops) and the
application's own data come on top, so a model that fills a board to the byte is refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from spikeport.errors import CapabilityExceeded

KIB = 1024
# Room kept for the model's code, start-up and stack: its loops compile to a few KB at -Os.
RESERVE_FLASH, RESERVE_RAM = 32 * KIB, 8 * KIB


@dataclass(frozen=True)
class Board:
    name: str
    core: str
    flash_bytes: int
    ram_bytes: int
    source: str


BOARDS = {
    b.name: b
    for b in (
        Board(
            "qemu-mps2-an385",
            "Cortex-M3",
            4096 * KIB,
            4096 * KIB,
            "Arm MPS2 AN385 as QEMU models it: 4 MB code SSRAM, 4 MB data SSRAM",
        ),
        Board(
            "stm32f746g-disco",
            "Cortex-M7",
            1024 * KIB,
            320 * KIB,
            "STM32F746NG data sheet (DS10916): 1 MB flash, 320 KB SRAM (incl. 64 KB DTCM)",
        ),
        Board(
            "nrf52840-dk",
            "Cortex-M4F",
            1024 * KIB,
            256 * KIB,
            "nRF52840 product specification: 1 MB flash, 256 KB RAM",
        ),
    )
}


def check_fit(board: str, flash_bytes: int, ram_bytes: int) -> dict[str, Any]:
    """The board's profile, or CapabilityExceeded saying what is needed and what is there."""
    if board not in BOARDS:
        raise CapabilityExceeded(f"unknown board '{board}': known boards are {', '.join(BOARDS)}")
    b = BOARDS[board]
    for what, need, have, reserve in (
        ("flash", flash_bytes, b.flash_bytes, RESERVE_FLASH),
        ("RAM", ram_bytes, b.ram_bytes, RESERVE_RAM),
    ):
        if need + reserve > have:
            raise CapabilityExceeded(
                f"the model needs {need:,} bytes of {what} (+{reserve // KIB} KB kept for code "
                f"and stack) but board '{board}' ({b.core}) has {have:,}"
            )
    return asdict(b)
