"""Device profiles: one TOML file per target device, read by export and the runtime (see edgeinfer.profiles)."""
