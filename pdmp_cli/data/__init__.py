"""Datasets. A dataset is a manifest (``data_manifests/<name>.toml``) read by a registered
loader; adding a loader is adding one file here with ``@register_loader("name")``.

    bundle = load_dataset("synthetic")      # or a path to your own manifest
    inputs, label = bundle.train[0]         # inputs: {modality: tensor}
"""

from pdmp_cli.data.base import DatasetBundle, LOADERS, register_loader  # noqa: F401
from pdmp_cli.data.manifest import load_dataset, load_manifest, manifest_dir, list_manifests  # noqa: F401
