"""One reading of a torch profile, shared by the device check's `profile` section and `bench/loss_step.py --profile`.

`summarise(prof, gpu)` gives, for whatever ran under the profiler: the kernels run on the device and the time
the device was busy (a step whose device time is far below its wall time waits on the host: operator launches
and synchronisations), the kernel launches, the operators that take the device (on a CPU: the host) longest,
and the functions of this package that launch the most operators (operators called at top level, and their
host time). `show(summary)` prints it.
"""
import torch


def device_us(e):
    "An event's own time on the device (µs), under either of the profiler's names for it."
    return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)


def package_function(e):
    "The function of this package that called a profiled operator (`contextrast/file.py(line of its def): name`)."
    p = e.cpu_parent
    while p is not None:
        if "contextrast/" in p.key and ".py(" in p.key: return p.key[p.key.index("contextrast/"):]
        p = p.cpu_parent
    inside = [f for f in (e.stack or []) if "contextrast/" in f]
    return inside[0][inside[0].index("contextrast/"):] if inside else "(autograd's backward, or outside the package)"


def summarise(prof, gpu, operators=15, functions=12):
    "What a finished `torch.profiler.profile` (run with `with_stack=True`) says about where the time went."
    events = prof.key_averages()
    ops = [e for e in events if e.key.startswith("aten::")]
    kernels = [e for e in prof.events() if e.device_type != torch.autograd.DeviceType.CPU]   # what ran on the GPU
    top = sorted(ops, key=(device_us if gpu else (lambda e: e.self_cpu_time_total)), reverse=True)[:operators]
    by_function = {}
    for e in prof.events():                                 # top-level operators, by the function of the package that called them
        if not e.key.startswith("aten::") or (e.cpu_parent is not None and e.cpu_parent.key.startswith("aten::")): continue
        fn = package_function(e)
        n, ms = by_function.get(fn, (0, 0.0))
        by_function[fn] = (n + 1, ms + e.cpu_time_total / 1e3)
    return {"device_busy_ms": sum(e.time_range.elapsed_us() for e in kernels) / 1e3 if gpu else float("nan"),
            "kernels_run": len(kernels),
            "kernel_launches": sum(e.count for e in events if "LaunchKernel" in e.key),
            "top_level_operators": sum(n for n, _ in by_function.values()),
            "top_device_operators": [{"op": e.key, "calls": e.count, "device_ms": device_us(e) / 1e3,
                                      "cpu_ms": e.self_cpu_time_total / 1e3} for e in top],
            "top_functions": [{"function": k, "operators": n, "cpu_ms": ms}
                              for k, (n, ms) in sorted(by_function.items(), key=lambda kv: -kv[1][1])[:functions]]}


def show(s):
    "Print a summary from `summarise`."
    busy = "no device profiled" if s["device_busy_ms"] != s["device_busy_ms"] else f"device busy {s['device_busy_ms']:.1f} ms"
    print(f"{busy}, {s['kernels_run']} kernels run, {s['kernel_launches']} launches, "
          f"{s['top_level_operators']} operators called at top level")
    print(f"{'operator':40s} {'calls':>6s} {'device ms':>10s} {'host ms':>9s}")
    for o in s["top_device_operators"]:
        print(f"{o['op'][:40]:40s} {o['calls']:6d} {o['device_ms']:10.2f} {o['cpu_ms']:9.2f}")
    print(f"{'function of the package':70s} {'operators':>9s} {'host ms':>9s}")
    for f in s["top_functions"]:
        print(f"{f['function'][-70:]:70s} {f['operators']:9d} {f['cpu_ms']:9.2f}")
