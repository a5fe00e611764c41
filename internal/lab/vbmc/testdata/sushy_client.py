#!/usr/bin/python3
"""Drive imaged's virtual BMC with OpenStack's sushy (Debian python3-sushy), an independent
Redfish client. Used by conformance_test.go; one operation per run, one JSON line out.

usage: sushy_client.py URL USER PASSWORD CAFILE SYSTEM-ID OPERATION [ARG]
  systems                 the Systems collection's member identities
  state                   power state, boot override and MAC of the system
  boot-pxe-once           set_system_boot_options(PXE, enabled=ONCE)
  boot-source TARGET      set_system_boot_source(TARGET) (sushy's default: Once)
  reset TYPE              reset_system(TYPE), e.g. On, ForceOff, GracefulShutdown
"""
import json
import logging
import sys

import sushy

logging.basicConfig(level=logging.WARNING)


def main():
    url, user, password, cafile, system_id, op = sys.argv[1:7]
    args = sys.argv[7:]
    # verify=CAFILE: sushy (requests) checks the BMC's certificate against the lab CA.
    root = sushy.Sushy(url, username=user, password=password, verify=cafile)
    out = {}
    if op == "systems":
        coll = root.get_system_collection()
        out["members"] = sorted(coll.members_identities)
    else:
        system = root.get_system("/redfish/v1/Systems/" + system_id)
        if op == "state":
            nics = system.ethernet_interfaces
            out = {
                "id": system.identity,
                "power_state": system.power_state.value if system.power_state else None,
                "boot_enabled": system.boot.enabled.value if system.boot.enabled else None,
                "boot_target": system.boot.target.value if system.boot.target else None,
                "allowed_targets": sorted(v.value for v in system.get_allowed_system_boot_source_values()),
                "allowed_resets": sorted(v.value for v in system.get_allowed_reset_system_values()),
                "macs": sorted(nics.summary.keys()) if nics else [],
            }
        elif op == "boot-pxe-once":
            system.set_system_boot_options(sushy.BootSource.PXE,
                                           enabled=sushy.BootSourceOverrideEnabled.ONCE)
        elif op == "boot-source":
            system.set_system_boot_source(sushy.BootSource(args[0]))
        elif op == "reset":
            system.reset_system(sushy.ResetType(args[0]))
        else:
            raise SystemExit("unknown operation " + op)
        del system
    # Dropping the last reference logs the session out (Sushy.__del__ DELETEs it).
    del root
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
