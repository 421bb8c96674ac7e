# The Debian package: `cpack -G DEB` in the build folder makes taskserver_<version>-1_<arch>.deb.
# Included by CMakeLists.txt after install(TARGETS taskserver). The package holds the stripped
# binary, the systemd unit, the example config (a conffile) and the Debian doc files, which are
# generated here from the text below (nothing of a third party is copied).
# scripts/test_package.sh builds it and checks it (dpkg-deb, lintian, systemd-analyze, a run).

set(TASKSERVER_DEB_MAINTAINER
    "taskserver maintainers <maintainers@users.noreply.b-seed-801c7cab.example>"
    CACHE STRING "Maintainer field of the Debian package")
set(TASKSERVER_DEB_RELEASE "1" CACHE STRING "Debian revision (the -N of the package version)")

set(pkg_dir ${CMAKE_BINARY_DIR}/packaging)
file(MAKE_DIRECTORY ${pkg_dir})

# The date of the changelog entry: the last commit's, so a rebuild of one commit makes the same
# file; the configure time (or SOURCE_DATE_EPOCH) outside a git checkout.
set(pkg_date "")
find_package(Git QUIET)
if(GIT_FOUND AND EXISTS ${CMAKE_SOURCE_DIR}/.git)
  execute_process(COMMAND ${GIT_EXECUTABLE} -C ${CMAKE_SOURCE_DIR} log -1 --format=%ct
                  OUTPUT_VARIABLE pkg_epoch OUTPUT_STRIP_TRAILING_WHITESPACE
                  RESULT_VARIABLE git_rc ERROR_QUIET)
  if(git_rc EQUAL 0 AND pkg_epoch MATCHES "^[0-9]+$")
    set(saved_sde "$ENV{SOURCE_DATE_EPOCH}")
    set(ENV{SOURCE_DATE_EPOCH} ${pkg_epoch})
    string(TIMESTAMP pkg_date "%a, %d %b %Y %H:%M:%S +0000" UTC)
    set(ENV{SOURCE_DATE_EPOCH} "${saved_sde}")
  endif()
endif()
if(pkg_date STREQUAL "")
  string(TIMESTAMP pkg_date "%a, %d %b %Y %H:%M:%S +0000" UTC)
endif()
string(TIMESTAMP pkg_year "%Y" UTC)

set(deb_version "${PROJECT_VERSION}-${TASKSERVER_DEB_RELEASE}")

# /usr/share/doc/taskserver/changelog.Debian.gz (gzip -n: no name or time stamp inside).
file(WRITE ${pkg_dir}/changelog.Debian
"taskserver (${deb_version}) unstable; urgency=medium

  * Package taskserver ${PROJECT_VERSION}: the server binary, a hardened systemd unit
    (Type=notify, DynamicUser, StateDirectory=taskserver) and an example
    /etc/taskserver/taskserver.toml.

 -- ${TASKSERVER_DEB_MAINTAINER}  ${pkg_date}
")
find_program(GZIP_EXECUTABLE gzip REQUIRED)
execute_process(COMMAND ${GZIP_EXECUTABLE} -9 -n -f -k ${pkg_dir}/changelog.Debian
                RESULT_VARIABLE gzip_rc)
if(NOT gzip_rc EQUAL 0)
  message(FATAL_ERROR "gzip of ${pkg_dir}/changelog.Debian failed")
endif()

# /usr/share/doc/taskserver/copyright. The binary also holds code of libraries it is built
# with (sqlite3 linked statically, header-only spdlog, fmt, nlohmann-json and CLI11): named
# here with their licences; their full texts are in those packages' own copyright files.
file(WRITE ${pkg_dir}/copyright
"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: taskserver
Comment: The taskserver binary links SQLite statically (Debian package libsqlite3-dev,
 public domain) and contains code compiled from the header-only libraries spdlog (MIT),
 fmt (MIT), nlohmann-json (MIT) and CLI11 (BSD-3-Clause); see the copyright files of
 those Debian packages for their notices and licence texts. At run time it uses the
 shared libraries named in this package's Depends.

Files: *
Copyright: ${pkg_year} the taskserver maintainers
License: proprietary
 No licence to copy, modify or distribute taskserver has been granted yet;
 all rights are reserved by the taskserver maintainers.
")

# A short manual page; `taskserver --help` has the full list of settings.
file(WRITE ${pkg_dir}/taskserver.1
".TH TASKSERVER 1 \"\" \"taskserver ${PROJECT_VERSION}\" \"User Commands\"
.SH NAME
taskserver \\- asynchronous task queue in front of AI inference backends
.SH SYNOPSIS
.B taskserver
.RI [ options ]
.RB [ serve | demo | migrate | mock\\-backend ]
.br
.B taskserver
.RB ( submit | status | wait | cancel | list )
.RB [ \\-\\-server
.IR URL ]
.RI [ arguments ]
.SH DESCRIPTION
.B taskserver
accepts tasks over HTTP, records each one in a SQLite store before acknowledging it, queues
it by priority and runs it on one of the backends of its pool through a health\\-checked
round\\-robin balancer, with retries and per\\-task timeouts. Clients poll, stream
(Server\\-Sent Events) or receive a webhook, then fetch the result.
.PP
With no subcommand it serves.
.B taskserver \\-\\-help
lists every setting. Each flag also reads
.BI TASKSERVER_ NAME
from the environment and
.I name = value
from the TOML file given with
.BR \\-\\-config ;
flags win over the environment, which wins over the file.
Backends of the
.B image
pool come from
.B IMAGE_GEN_URL
and
.BR IMAGE_GEN_URL_1 .. N ,
those of the
.B transcribe
pool from
.BR WHISPER_URL *;
other pools from
.B [pool.NAME]
sections of the config file.
.SH FILES
.TP
.I /etc/taskserver/taskserver.toml
settings and pools, read by the systemd unit
.TP
.I /etc/default/taskserver
environment of the systemd unit (backend URLs, TASKSERVER_* overrides)
.TP
.I /var/lib/taskserver
the store (tasks.db) and the result and input files when run by systemd
.SH SIGNALS
SIGTERM or SIGINT: stop accepting tasks, let running attempts finish within
.B \\-\\-shutdown\\-grace
seconds, put the rest back in the queue and exit 0.
.SH SEE ALSO
.BR systemctl (1),
.BR systemd.exec (5)
")
execute_process(COMMAND ${GZIP_EXECUTABLE} -9 -n -f -k ${pkg_dir}/taskserver.1
                RESULT_VARIABLE gzip_rc)
if(NOT gzip_rc EQUAL 0)
  message(FATAL_ERROR "gzip of ${pkg_dir}/taskserver.1 failed")
endif()

# Control files: the conffile list and the maintainer scripts. The package does not enable the
# service: it has no backends until configured. An upgrade restarts a running server (the
# restart is graceful: running attempts finish, queued tasks stay queued). Nothing touches the
# running systemd when dpkg installs into another root (DPKG_ROOT set).
file(WRITE ${pkg_dir}/conffiles "/etc/taskserver/taskserver.toml\n")
file(WRITE ${pkg_dir}/postinst
"#!/bin/sh
set -e
if [ \"$1\" = configure ] && [ -z \"\${DPKG_ROOT:-}\" ] && [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null || true
  if [ -n \"$2\" ]; then
    deb-systemd-invoke try-restart taskserver.service >/dev/null || true
  fi
fi
exit 0
")
file(WRITE ${pkg_dir}/prerm
"#!/bin/sh
set -e
if [ \"$1\" = remove ] && [ -z \"\${DPKG_ROOT:-}\" ] && [ -d /run/systemd/system ]; then
  deb-systemd-invoke stop taskserver.service >/dev/null || true
fi
exit 0
")
file(WRITE ${pkg_dir}/postrm
"#!/bin/sh
set -e
if [ \"$1\" = purge ]; then
  # The links made by `systemctl enable taskserver`. The store in /var/lib/taskserver
  # (/var/lib/private/taskserver) is kept: delete it by hand if the tasks are not wanted.
  rm -f \"\${DPKG_ROOT:-}\"/etc/systemd/system/*.wants/taskserver.service
fi
if [ -z \"\${DPKG_ROOT:-}\" ] && [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null || true
fi
exit 0
")
file(CHMOD ${pkg_dir}/postinst ${pkg_dir}/prerm ${pkg_dir}/postrm
     PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                 WORLD_READ WORLD_EXECUTE)

# What the package installs besides /usr/bin/taskserver. The unit and the config have absolute
# destinations: they belong where Debian's systemd and /etc are, whatever the prefix.
install(FILES ${CMAKE_SOURCE_DIR}/scripts/taskserver.service DESTINATION /lib/systemd/system)
install(FILES ${CMAKE_SOURCE_DIR}/scripts/taskserver.toml DESTINATION /etc/taskserver)
install(FILES ${pkg_dir}/copyright ${pkg_dir}/changelog.Debian.gz
        DESTINATION share/doc/taskserver)
install(FILES ${pkg_dir}/taskserver.1.gz DESTINATION share/man/man1)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME taskserver)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "the taskserver maintainers")
set(CPACK_PACKAGE_CONTACT "${TASKSERVER_DEB_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "asynchronous task queue for AI inference backends")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_NAME taskserver)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${TASKSERVER_DEB_RELEASE})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${TASKSERVER_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# The extended description; CPack puts CPACK_PACKAGE_DESCRIPTION_SUMMARY before it as the
# synopsis and indents its lines.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
"taskserver turns slow inference backends (text-to-image GPUs, speech-to-text,
document processing) into an asynchronous HTTP service: a client submits a task
and gets an id at once; the task is committed to SQLite, queued by priority and
run by a fixed worker pool on one of several health-checked backends, with
retries, timeouts, cancellation, Server-Sent Events, webhooks and Prometheus
metrics. One binary and one SQLite file; no broker.
.
The package ships a hardened systemd unit (not enabled on install) and an
example configuration in /etc/taskserver/taskserver.toml.")
# dpkg-shlibdeps turns the binary's NEEDED libraries into Depends (libcpp-httplib0.11,
# libssl3, libstdc++6, ...); the unit needs systemd's notify protocol only when run by it.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${pkg_dir}/conffiles ${pkg_dir}/postinst ${pkg_dir}/prerm ${pkg_dir}/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)
include(CPack)
