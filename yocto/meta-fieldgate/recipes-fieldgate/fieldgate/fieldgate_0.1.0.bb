SUMMARY = "fieldgate industrial edge gateway"
DESCRIPTION = "Polls Modbus field devices and reads CAN buses, buffers every sample \
               durably in SQLite and forwards it over MQTT with mutual TLS, its key \
               held in the TPM. Gateway binary only: the cloud code is left out by \
               cargo features."
HOMEPAGE = "https://fieldgate.example.net"
BUGTRACKER = "https://fieldgate.example.net/issues"
SECTION = "net"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

# tss-esapi links the TPM software stack (tpm2-tss, from meta-security's meta-tpm).
DEPENDS += "tpm2-tss"

# Point FIELDGATE_GIT_URI at your mirror of the repository and pin SRCREV to a release.
FIELDGATE_GIT_URI ??= "git://git.example.net/fieldgate.git;protocol=https;branch=main"
PV .= "+git"
SRC_URI = "${FIELDGATE_GIT_URI}"
SRCREV = "0000000000000000000000000000000000000000"

require ${BPN}-crates.inc

CVE_PRODUCT = "fieldgate"

inherit cargo systemd useradd

# The gateway alone: no cloud code in the image (EXTRA_CARGO_FLAGS is cargo.bbclass's).
# nooelint: oelint.vars.mispell
EXTRA_CARGO_FLAGS = "--no-default-features --features gateway,tpm --bin fieldgate"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/fieldgate.service ${D}${systemd_system_unitdir}/
    install -d ${D}${systemd_unitdir}/system-generators
    install -m 0755 ${S}/systemd/fieldgate-generator ${D}${systemd_unitdir}/system-generators/
    install -d ${D}${libexecdir}/fieldgate
    install -m 0755 ${S}/systemd/fieldgate-launch ${D}${libexecdir}/fieldgate/
    install -d ${D}${sysconfdir}/fieldgate
    install -m 0640 ${S}/config/gateway.toml ${D}${sysconfdir}/fieldgate/gateway.toml
    install -d ${D}${datadir}/doc/fieldgate
    install -m 0644 ${S}/README.md ${S}/docs/field-guide.md ${S}/docs/config.md ${D}${datadir}/doc/fieldgate/
}

USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir ${localstatedir}/lib/fieldgate --no-create-home --shell /sbin/nologin --groups dialout,tss fieldgate"
GROUPADD_PARAM:${PN} = "--system fieldgate"

SYSTEMD_SERVICE:${PN} = "fieldgate.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

CONFFILES:${PN} = "${sysconfdir}/fieldgate/gateway.toml"
FILES:${PN} += "${datadir}/doc/fieldgate ${systemd_unitdir}/system-generators ${libexecdir}/fieldgate"

# The TPM 2.0 user space for the TPM-held identity (device access through /dev/tpmrm0).
RDEPENDS:${PN} += "libtss2 libtss2-tcti-device"
