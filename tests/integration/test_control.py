#!/usr/bin/env python3
"""
test_control.py - tidegate-control's integration tests, as TAP.

Runs every test module below against a real redis-server and the real
tidegate-control / tidegate-ctl from $TG_BUILD (default: ./build), one
fresh Redis + daemon per test class. `-k WORD` runs only the tests whose
name contains WORD. Registered in tests/meson.build as suite 'integration'.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import test_admin_errors  # noqa: E402
import test_cli  # noqa: E402
import test_config  # noqa: E402
import test_deactivate  # noqa: E402
import test_keys  # noqa: E402
import test_leases  # noqa: E402
import test_link  # noqa: E402
import test_linkctl  # noqa: E402
import test_redis  # noqa: E402
import test_restore  # noqa: E402
import test_seats  # noqa: E402
import test_startup  # noqa: E402

if __name__ == "__main__":
    harness.main([test_config, test_startup, test_keys, test_cli, test_admin_errors, test_seats,
                  test_leases, test_link, test_linkctl, test_restore, test_deactivate, test_redis])
