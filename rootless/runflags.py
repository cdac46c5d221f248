"""The `run` flags whose values live in the container's record rather than its Spec: labels,
restart policy, health check, stop signal and timeout, log driver and size; parsed and checked
before anything is created. Light to import: `run` loads it on every start.
"""

from __future__ import annotations

from typing import Any

from rootless.errors import RootlessError

RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
HEALTH_ACTIONS = ("none", "kill", "restart", "stop")


def parse_restart(text: str) -> tuple[str, int]:
    """--restart POLICY[:N] → (policy, N); N only for on-failure (0: no limit)."""
    policy, colon, n = text.partition(":")
    if policy == "":
        policy = "no"
    if policy not in RESTART_POLICIES or (colon and (policy != "on-failure" or not n.isdigit())):
        raise RootlessError(f'invalid restart policy "{text}"',
                            hint="no, on-failure[:MAX-RETRIES], always or unless-stopped")
    return policy, int(n) if colon else 0


def read_labels(files: list[str], labels: list[str], base: dict[str, str]) -> dict[str, str]:
    """The image's labels overlaid with --label-file's lines and --label (Podman's order)."""
    out = dict(base)
    items: list[tuple[str, str]] = []
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise RootlessError(f"--label-file {path}: {e.strerror}") from e
        items += [(f"--label-file {path}", ln.strip()) for ln in text.splitlines()
                  if ln.strip() and not ln.lstrip().startswith("#")]
    items += [("--label", v) for v in labels]
    for flag, item in items:
        k, _, v = item.partition("=")
        if not k.strip():
            raise RootlessError(f"{flag} {item!r}: the label has no name", hint="KEY=VALUE")
        out[k.strip()] = v
    return out


def _seconds(text: str | None, flag: str, default: float) -> float:
    if text is None or text == "":
        return default
    from rootless.lifecycle import parse_duration  # only for health flags: lifecycle is off run's path

    v = parse_duration(text, flag)
    if v < 0:
        raise RootlessError(f"{flag} {text!r}: must not be negative")
    return v


def health_config(a: Any, image_config: dict[str, Any]) -> dict[str, Any]:
    """The health check from --health-* over the image's Healthcheck; {} for none."""
    img = image_config.get("Healthcheck") or {}
    test: list[str] | None = list(img.get("Test") or []) or None
    if a.health_cmd is not None:
        cmd = a.health_cmd.strip()
        if cmd.lower() == "none":
            test = None
        elif cmd.startswith("["):
            import json

            try:
                argv = json.loads(cmd)
            except ValueError:
                argv = None
            if not (isinstance(argv, list) and argv and all(isinstance(x, str) for x in argv)):
                raise RootlessError(f"--health-cmd {cmd!r}: not a JSON array of strings")
            test = argv if argv[0] in ("CMD", "CMD-SHELL") else ["CMD", *argv]
        elif cmd:
            test = ["CMD-SHELL", cmd]
    if test and test[0] == "NONE":
        test = None
    given = [f for f in ("health_interval", "health_retries", "health_start_period", "health_timeout",
                         "health_on_failure") if getattr(a, f) is not None]
    if not test:
        if given:
            raise RootlessError(f"--{given[0].replace('_', '-')} needs a health check",
                                hint="give --health-cmd (the image has no HEALTHCHECK)")
        return {}
    ns = 1e-9

    def img_seconds(key: str, default: float) -> float:
        return float(img[key]) * ns if img.get(key) else default

    interval_text = a.health_interval
    retries_text = a.health_retries
    try:
        retries = int(retries_text) if retries_text is not None else int(img.get("Retries") or 3)
    except ValueError:
        retries = -1
    if retries < 1:
        raise RootlessError(f"--health-retries {retries_text!r}: must be a whole number of at least 1")
    action = a.health_on_failure or "none"
    if action not in HEALTH_ACTIONS:
        raise RootlessError(f"--health-on-failure {action!r}: unknown action", hint="none, kill, restart or stop")
    interval = 0.0 if interval_text == "disable" else \
        _seconds(interval_text, "--health-interval", img_seconds("Interval", 30.0))
    return {"test": test, "interval": interval,
            "timeout": _seconds(a.health_timeout, "--health-timeout", img_seconds("Timeout", 30.0)),
            "start_period": _seconds(a.health_start_period, "--health-start-period", img_seconds("StartPeriod", 0.0)),
            "retries": retries, "on_failure": action}


def record_options(a: Any, image_config: dict[str, Any], detach: bool = False) -> dict[str, Any]:
    """The record's share of the `run` flags (labels, restart, health, stop, log), checked
    before anything is created."""
    from rootless.image.limits import parse_size

    policy, max_retries = parse_restart(a.restart) if a.restart is not None else ("no", 0)
    if policy != "no" and a.rm:
        raise RootlessError("the --rm option conflicts with --restart", hint="drop one of them")
    stop_signal = a.stop_signal or image_config.get("StopSignal")
    if a.stop_signal:
        from rootless.lifecycle import parse_signal

        parse_signal(a.stop_signal)
    try:
        stop_timeout = int(a.stop_timeout) if a.stop_timeout is not None else 10
    except ValueError:
        stop_timeout = -1
    if stop_timeout < 0:
        raise RootlessError(f"--stop-timeout {a.stop_timeout!r}: must be a whole number of seconds")
    driver = a.log_driver or "k8s-file"
    if driver == "json-file":
        driver = "k8s-file"  # Podman takes Docker's name for its own format
    if driver not in ("k8s-file", "none", "passthrough"):
        raise RootlessError(f"--log-driver {driver!r}: not available", hint="k8s-file, none or passthrough")
    if driver == "passthrough" and detach:
        raise RootlessError("--log-driver passthrough needs the terminal: it cannot be used with -d",
                            hint="use k8s-file (the default) for detached containers")
    max_size = 0
    for opt in a.log_opt:
        k, eq, v = opt.partition("=")
        if k == "max-size" and eq:
            max_size = parse_size(v, "--log-opt max-size")
            if max_size and max_size < 4096:
                raise RootlessError(f"--log-opt {opt!r}: at least 4k", hint="for example max-size=10m")
        elif k == "max-file" and v.isdigit():
            continue  # k8s-file keeps one file, as conmon does
        else:
            raise RootlessError(f"--log-opt {opt!r}: unknown option", hint="max-size=SIZE")
    labels = read_labels(a.label_file, a.label, dict(image_config.get("Labels") or {}))
    return {"labels": labels, "restart": policy, "restart_max": max_retries, "stop_signal": stop_signal,
            "stop_timeout": stop_timeout, "health": health_config(a, image_config), "log_driver": driver,
            "log_max_size": max_size, "rmi": a.rmi}
