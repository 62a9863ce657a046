"""What a backend starts: ``python -m mlxk.deploy.runner --root ROOT NAME``.

Reads and checks the deployment's config at each start (an edit applies on restart),
pulls a Hub model that is not in the cache yet (progress lands in the log, where
``mlxk deploy watch`` shows it), then replaces itself with ``mlxk serve`` (same pid, so
the backend's pid is the server's supervisor). The API key goes to ``mlxk serve`` in
``MLXK_API_KEY``, read from the variable ``server.api_key_env`` names: never in argv.
Exit code 2 and one ``mlxk deploy: error:`` line in the log when it cannot start.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ERROR_PREFIX = "mlxk deploy: error: "


def _say(text: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} mlxk deploy: {text}\n")
    sys.stderr.flush()


def _fail(text: str) -> int:
    sys.stderr.write(ERROR_PREFIX + text + "\n")
    sys.stderr.flush()
    return 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mlxk-deploy-runner")
    p.add_argument("--root", required=True)
    p.add_argument("name")
    args = p.parse_args(argv)

    from mlxk.contract import MlxkError
    from mlxk.deploy import config, launch, store

    try:
        dep = store.get(store.deploy_root(args.root), args.name)
        record = dep.install_record() or {}
        trust = bool(record.get("trust_remote_code"))
        cfg, kind = config.load(dep, allow_remote_code=trust)
    except MlxkError as err:
        return _fail(err.message)
    env = {k: v for k, v in os.environ.items() if k != "MLXK_API_KEY"}
    if cfg.server.api_key_env:
        key = os.environ.get(cfg.server.api_key_env, "").strip()
        if not key:
            return _fail(f"server.api_key_env names {cfg.server.api_key_env}, which is not set in this "
                         "service's environment")
        env["MLXK_API_KEY"] = key
    if kind == "hub":
        _say(f"pulling {cfg.model_path} from the Hugging Face Hub (first start)")
        from mlxk.hub.pull import pull

        try:
            result = pull(cfg.model_path, progress=True)
        except MlxkError as err:
            return _fail(f"pulling {cfg.model_path} failed: {err.message}")
        _say(result.data["message"])
    serve = [sys.executable, "-m", "mlxk", "serve", *launch.serve_args(cfg, dep, trust_remote_code=trust)]
    _say(f"starting '{dep.name}': mlxk serve {' '.join(serve[4:])}")
    sys.stdout.flush()
    os.execve(sys.executable, serve, env)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
