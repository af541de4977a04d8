"""numanet deviceplugin."""
