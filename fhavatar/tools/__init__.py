"""Offline tools: building the packaged OpenHead asset and converting third-party files (FLAME, PanoHead).

Never imported by runtime code (the runtime modules import nothing from `fhavatar.tools`); the tools may import
runtime modules. Each tool runs with `python -m fhavatar.tools.<name>`:

- `build_open_head`: rebuild `fhavatar/head/assets/open_head.safetensors` from MediaPipe's canonical face
  (needs scipy: `pip install fhavatar[build]`).
- `convert_flame`: the official FLAME files -> one FHAvatar FLAME file.
- `convert_prior`: official PanoHead / dual-encoder checkpoints -> a `PanoHeadPrior.from_pretrained` folder
  (subcommands `panohead` and `inversion`).

`restricted_pickle` and `network_pickle` are the converters' pickle readers, which never run code from a file.
"""
