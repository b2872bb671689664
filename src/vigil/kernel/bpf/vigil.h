/* SPDX-License-Identifier: GPL-2.0 */
/* vigil: what every sensor includes.  events.h holds the shared event header
 * (enums, layouts, configuration), maps.h the shared maps, helpers.h the
 * helpers. */
#ifndef VIGIL_H
#define VIGIL_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "events.h"
#include "maps.h"
#include "helpers.h"

char LICENSE[] SEC("license") = "GPL";

#endif /* VIGIL_H */
