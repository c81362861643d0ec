SUMMARY = "fieldgate gateway and what it needs at run time"
DESCRIPTION = "The fieldgate gateway with CA certificates and time zone data; an NTP \
               client and the CAN utilities are recommended."
LICENSE = "MIT"

inherit packagegroup

RDEPENDS:${PN} = "ca-certificates fieldgate tzdata"
RRECOMMENDS:${PN} = "can-utils chrony"
