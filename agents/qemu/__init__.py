"""QEMU guests migrated by QEMU itself: the guest image, a QMP client and a migration driver.

Knows nothing of the lab: processes are started through a launcher the caller gives.
"""
