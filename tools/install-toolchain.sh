#!/usr/bin/env bash
# Installs what the C target's tests need (Cortex-M cross compiler, newlib, QEMU) from
# Debian's packages when they are missing and we are root; otherwise says, in one line, that
# those tests will be skipped. Never fails the build.
set -u
need=()
command -v cc >/dev/null || need+=(gcc)
command -v arm-none-eabi-gcc >/dev/null || need+=(gcc-arm-none-eabi)
[ -e /usr/lib/arm-none-eabi/newlib/librdimon.a ] || need+=(libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null || need+=(qemu-system-arm)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${need[*]} (Debian packages for the C target tests) ..."
  if apt-get update -qq >/dev/null 2>&1 &&
     DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1; then
    exit 0
  fi
fi
echo "C target: could not install ${need[*]}; tests that need them will be reported as skipped"
exit 0
