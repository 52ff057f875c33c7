"""Device profiles: one TOML per target (RAM banks, flash, external RAM, CPU, serial defaults,
and the datasheet each figure comes from). Read them with `edgeadapt.export.load_profile`."""
