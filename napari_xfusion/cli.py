"""Command-line interface `xfusion` (being written)."""


def main(argv=None) -> int:
    raise SystemExit("xfusion: not implemented yet")
