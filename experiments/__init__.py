"""Studies that use the library: the toy claims (C1–C4, which MI) and the GPU validation."""
