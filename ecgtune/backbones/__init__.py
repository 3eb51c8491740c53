"""Pretrained backbones shared across trials and sweeps: pay for pretraining once.

- `key`: what a backbone depends on, hashed (the backbone key);
- `store`: entries by key on any filesystem Ray Tune's storage can use (local, NFS, s3://...);
- `claims`: of all trials that need one key, exactly one pretrains it.

No Ray and no training here: `ecgtune.reuse` runs a trial's pretraining through the store.
"""

from ecgtune.backbones.claims import Claim, ClaimTiming, acquire, holder_name
from ecgtune.backbones.key import BACKBONE_FORMAT, backbone_key, key_material
from ecgtune.backbones.store import Backbone, BackboneStore, EntryInfo, EntryRefused, describe_entry

__all__ = [
    "BACKBONE_FORMAT",
    "Backbone",
    "BackboneStore",
    "Claim",
    "ClaimTiming",
    "EntryInfo",
    "EntryRefused",
    "acquire",
    "backbone_key",
    "describe_entry",
    "holder_name",
    "key_material",
]
