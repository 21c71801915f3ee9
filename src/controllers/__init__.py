"""Multi-agent controllers by name (`mac` in the config)."""
from controllers.basic_mac import BasicMAC, NonSharedMAC

REGISTRY = {
    "basic_mac": BasicMAC,
    "non_shared_mac": NonSharedMAC,
}
