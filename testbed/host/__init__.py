"""The machine the lab runs on: what its kernel can do (doctor), where each spec runs
(placement), the full-kernel VM and the impairment appliance, commands in namespaces, and the
run registry that ``testbed clean`` reads."""
