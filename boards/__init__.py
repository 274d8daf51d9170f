"""Board tops, bitstream builds and the host driver (to come: see docs/architecture.md)."""
