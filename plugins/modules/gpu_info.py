#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: gpu_info
short_description: Read the NVIDIA GPUs, driver and CUDA version of a host, and where the linker finds libcuda
version_added: "0.1.0"
description:
  - Runs C(nvidia-smi --query-gpu=name,memory.total,driver_version,count,compute_cap,uuid,pci.bus_id
    --format=csv,noheader,nounits) and returns one entry per GPU.
  - The CUDA version (the highest the driver supports) is not a query field of nvidia-smi; it is read from
    the banner that plain C(nvidia-smi) prints (the C(CUDA Version) field, for example C(13.0)).
  - Values nvidia-smi reports as C([N/A]) are returned as null. Drivers too old for C(compute_cap) are
    queried again without it.
  - Also returns where the dynamic linker finds the driver's C(libcuda.so.1) for a program started with no
    E(LD_LIBRARY_PATH) (RV(libcuda)), that is the first entry of C(ldconfig -p) (the linker cache) of the host's
    architecture, else the file in one of the loader's system directories (C(/lib/<triplet>),
    C(/usr/lib/<triplet>), C(/lib), C(/usr/lib) on Debian and Ubuntu), as C(ld.so) searches. With
    O(libcuda_dir) it also says whether C(libcuda.so.1) is in that directory.
  - Read-only; runs in check mode too. Fails clearly when nvidia-smi is missing or cannot talk to the driver
    (RV(libcuda) is returned then too).
author:
  - llmops team (@llmops)
options:
  nvidia_smi:
    description:
      - Path of the nvidia-smi program. By default it is searched in E(PATH), then in C(/usr/bin),
        C(/usr/local/nvidia/bin) and C(/usr/local/bin).
    type: path
  libcuda_dir:
    description:
      - A directory that must hold C(libcuda.so.1) (for example the one a unit's E(LD_LIBRARY_PATH) names);
        RV(libcuda.in_dir) says whether it does. Without it RV(libcuda.in_dir) is null.
    type: path
  ldconfig:
    description:
      - Path of the ldconfig program whose C(-p) lists the linker cache. By default it is searched in E(PATH),
        then in C(/sbin) and C(/usr/sbin). Without one only the system directories are looked at.
    type: path
attributes:
  check_mode:
    support: full
    description: Read-only; runs nvidia-smi in check mode as well.
  diff_mode:
    support: none
    description: Reads only; there is nothing to diff.
seealso:
  - name: nvidia-smi documentation
    description: The NVIDIA System Management Interface.
    link: https://docs.nvidia.com/deploy/nvidia-smi/index.html
'''

EXAMPLES = r'''
- name: Read the GPUs
  llmops.gce_vllm.gpu_info:
  register: gpu

- name: Require one NVIDIA L4 with driver 580 or newer
  ansible.builtin.assert:
    that:
      - gpu.gpus | selectattr('name', 'equalto', 'NVIDIA L4') | list | length >= 1
      - gpu.driver_major >= 580
    fail_msg: "Found {{ gpu.gpus | map(attribute='name') | list }} with driver {{ gpu.driver_version }}"

- name: Require that the dynamic linker finds libcuda.so.1 without LD_LIBRARY_PATH
  ansible.builtin.assert:
    that: gpu.libcuda.path
    fail_msg: "ldconfig -p lists no libcuda.so.1 and no system directory holds it"
'''

RETURN = r'''
gpus:
  description: One entry per GPU, in nvidia-smi's index order.
  returned: always
  type: list
  elements: dict
  contains:
    index:
      description: Zero-based GPU index.
      type: int
    name:
      description: Product name, for example C(NVIDIA L4).
      type: str
    memory_total_mib:
      description: Total memory in MiB (null if not reported).
      type: int
    driver_version:
      description: Driver version.
      type: str
    compute_cap:
      description: CUDA compute capability, for example C(8.9) (null if not reported).
      type: str
    uuid:
      description: GPU UUID.
      type: str
    pci_bus_id:
      description: PCI bus id.
      type: str
  sample:
    - {index: 0, name: NVIDIA L4, memory_total_mib: 23034, driver_version: 580.95.05, compute_cap: "8.9",
       uuid: GPU-6b1f2e3a-9c4d-5e7f-8a0b-1c2d3e4f5a60, pci_bus_id: "00000000:00:03.0"}
count:
  description: Number of GPUs.
  returned: always
  type: int
  sample: 1
names:
  description: The GPU names, in index order.
  returned: always
  type: list
  elements: str
  sample: [NVIDIA L4]
driver_version:
  description: Driver version of the first GPU (null without GPUs).
  returned: always
  type: str
  sample: 580.95.05
driver_major:
  description: Major number of the driver version (null without GPUs).
  returned: always
  type: int
  sample: 580
cuda_version:
  description: Highest CUDA version the driver supports, from the nvidia-smi banner (null if not shown).
  returned: always
  type: str
  sample: "13.0"
cuda_major:
  description: Major number of RV(cuda_version).
  returned: always
  type: int
  sample: 13
nvidia_smi:
  description: The nvidia-smi program that was run.
  returned: always
  type: str
  sample: /usr/bin/nvidia-smi
libcuda:
  description: Where the dynamic linker finds C(libcuda.so.1) for a program started with no E(LD_LIBRARY_PATH).
  returned: always
  type: dict
  contains:
    name:
      description: The library looked for, C(libcuda.so.1).
      type: str
    path:
      description: The file the linker loads (the first of RV(libcuda.cache), else the one in a system directory); null if none.
      type: str
    found_by:
      description: C(ld.so.cache) (listed by C(ldconfig -p)), C(system directory) (not in the cache, in a system directory), or null.
      type: str
    cache:
      description: Every path C(ldconfig -p) lists for C(libcuda.so.1) of this architecture, in the linker's order.
      type: list
      elements: str
    ldconfig:
      description: The ldconfig program that was run (null if none was found or it failed).
      type: str
    dir:
      description: O(libcuda_dir), or null.
      type: str
    in_dir:
      description: Whether O(libcuda_dir) holds C(libcuda.so.1); null without O(libcuda_dir).
      type: bool
  sample:
    name: libcuda.so.1
    path: /usr/lib/x86_64-linux-gnu/libcuda.so.1
    found_by: ld.so.cache
    cache: [/usr/lib/x86_64-linux-gnu/libcuda.so.1]
    ldconfig: /usr/sbin/ldconfig
    dir: null
    in_dir: null
'''

import csv
import io
import os
import platform
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gce_vllm.plugins.module_utils.ldconfig import locate

QUERY_FIELDS = ('name', 'memory.total', 'driver_version', 'count', 'compute_cap', 'uuid', 'pci.bus_id')
SEARCH_DIRS = ['/usr/bin', '/usr/local/nvidia/bin', '/usr/local/bin']
LDCONFIG_DIRS = ['/sbin', '/usr/sbin']
LIBCUDA = 'libcuda.so.1'
CUDA_RE = re.compile(r'CUDA Version\s*:\s*([0-9][0-9.]*|N/A)')


def _value(raw):
    raw = raw.strip()
    if raw in ('[N/A]', 'N/A', '[Not Supported]', '[Unknown Error]', ''):
        return None
    return raw


def _int(raw):
    value = _value(raw)
    if value is None:
        return None
    match = re.match(r'^(\d+)', value)
    return int(match.group(1)) if match else None


def parse_query(text, fields=QUERY_FIELDS):
    """Parse `--format=csv,noheader,nounits` output of the given fields into the gpus list."""
    gpus = []
    rows = [row for row in csv.reader(io.StringIO(text), skipinitialspace=True) if any(c.strip() for c in row)]
    for index, row in enumerate(rows):
        if len(row) != len(fields):
            raise ValueError('expected %d comma-separated values (%s), got %d in line %r' % (
                len(fields), ', '.join(fields), len(row), ', '.join(row)))
        values = dict(zip(fields, row))
        gpus.append(dict(
            index=index,
            name=_value(values.get('name', '')),
            memory_total_mib=_int(values.get('memory.total', '')),
            driver_version=_value(values.get('driver_version', '')),
            compute_cap=_value(values.get('compute_cap', '')),
            uuid=_value(values.get('uuid', '')),
            pci_bus_id=_value(values.get('pci.bus_id', '')),
        ))
    return gpus


def parse_cuda_version(text):
    """The CUDA version from the banner ('CUDA Version: 13.0') or from -q ('CUDA Version   : 13.0')."""
    match = CUDA_RE.search(text or '')
    if not match or match.group(1) == 'N/A':
        return None
    return match.group(1)


def _major(version):
    if not version:
        return None
    match = re.match(r'^(\d+)', version)
    return int(match.group(1)) if match else None


def summarize(gpus, cuda_version):
    driver = gpus[0]['driver_version'] if gpus else None
    return dict(gpus=gpus, count=len(gpus), names=[g['name'] for g in gpus], driver_version=driver,
                driver_major=_major(driver), cuda_version=cuda_version, cuda_major=_major(cuda_version))


def _output_line(out, err):
    text = (out or '').strip() or (err or '').strip()
    return ' '.join(text.splitlines()[:3]) if text else '(no output)'


def find_libcuda(module, libcuda_dir=None, ldconfig=None):
    """RV(libcuda): `ldconfig -p` read once, parsed by module_utils/ldconfig.py."""
    if ldconfig and not (os.path.isfile(ldconfig) and os.access(ldconfig, os.X_OK)):
        module.fail_json(msg='ldconfig=%s does not exist or is not executable.' % ldconfig)
    program = ldconfig or module.get_bin_path('ldconfig') or module.get_bin_path('ldconfig', opt_dirs=LDCONFIG_DIRS)
    text = None
    if program:
        # C locale: the cache listing is not translated, but its header and errors would be
        rc, out, dummy = module.run_command([program, '-p'], environ_update=dict(LC_ALL='C', LANG='C'))
        if rc == 0:
            text = out
        else:
            program = None
    found = locate(LIBCUDA, text, platform.machine())
    found.update(ldconfig=program, dir=libcuda_dir,
                 in_dir=os.path.exists(os.path.join(libcuda_dir, LIBCUDA)) if libcuda_dir else None)
    return found


def main():
    module = AnsibleModule(argument_spec=dict(nvidia_smi=dict(type='path'), libcuda_dir=dict(type='path'),
                                              ldconfig=dict(type='path')),
                           supports_check_mode=True)
    libcuda = find_libcuda(module, module.params['libcuda_dir'], module.params['ldconfig'])
    smi = module.params['nvidia_smi']
    if smi:
        found = smi if os.path.isabs(smi) else module.get_bin_path(smi)
        if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
            module.fail_json(msg='nvidia_smi=%s does not exist or is not executable; point nvidia_smi at the '
                                 'nvidia-smi program of the NVIDIA driver.' % smi, libcuda=libcuda)
    else:
        # PATH first (get_bin_path would search opt_dirs before PATH), then the usual driver locations.
        smi = module.get_bin_path('nvidia-smi') or module.get_bin_path('nvidia-smi', opt_dirs=SEARCH_DIRS)
        if not smi:
            module.fail_json(msg='nvidia-smi was not found in PATH or %s: this host has no NVIDIA driver '
                                 '(use an image with the driver, e.g. ubuntu-accelerator-2204-amd64-with-nvidia-580) '
                                 'or set nvidia_smi to its path.' % ', '.join(SEARCH_DIRS), libcuda=libcuda)

    fields = list(QUERY_FIELDS)
    cmd = [smi, '--query-gpu=' + ','.join(fields), '--format=csv,noheader,nounits']
    rc, out, err = module.run_command(cmd)
    if rc != 0 and 'compute_cap' in (out + err) and 'not a valid field' in (out + err):
        fields.remove('compute_cap')
        cmd = [smi, '--query-gpu=' + ','.join(fields), '--format=csv,noheader,nounits']
        rc, out, err = module.run_command(cmd)
    if rc == 6 or 'No devices were found' in out:
        gpus = []
    elif rc != 0:
        module.fail_json(msg='%s failed (exit status %d): %s' % (' '.join(cmd), rc, _output_line(out, err)),
                         rc=rc, stdout=out, stderr=err, nvidia_smi=smi, libcuda=libcuda)
    else:
        try:
            gpus = parse_query(out, fields)
        except ValueError as exc:
            module.fail_json(msg='Cannot parse the output of %s: %s' % (' '.join(cmd), exc), stdout=out,
                             nvidia_smi=smi, libcuda=libcuda)

    cuda_version = None
    if gpus:
        rc, banner, err = module.run_command([smi])
        if rc != 0:
            module.fail_json(msg='%s failed (exit status %d): %s' % (smi, rc, _output_line(banner, err)),
                             rc=rc, stdout=banner, stderr=err, nvidia_smi=smi, libcuda=libcuda)
        cuda_version = parse_cuda_version(banner)
    result = summarize(gpus, cuda_version)
    module.exit_json(changed=False, nvidia_smi=smi, libcuda=libcuda, **result)


if __name__ == '__main__':
    main()
