"""Which failed upload attempts the SDK tries again, and after how long."""

from __future__ import annotations

from maas.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    QuotaExceeded,
    Unavailable,
)
from maas.model_files import UPLOAD_ATTEMPTS, is_rate_limited, is_resumable, resume_delay_s


def test_a_rate_limit_is_waited_out_but_a_long_quota_is_not() -> None:
    limited = QuotaExceeded("over its rate limit", retry_delay_s=0.9)
    assert is_rate_limited(limited) and is_resumable(limited, 1)
    assert resume_delay_s(limited, 1) == 0.9
    assert not is_resumable(QuotaExceeded("full for a while", retry_delay_s=60.0), 1)
    assert not is_resumable(QuotaExceeded("no delay given"), 1)


def test_broken_streams_resume_until_the_attempts_run_out() -> None:
    assert is_resumable(Unavailable("gateway restarting"), 1)
    assert not is_resumable(Unavailable("gateway restarting"), UPLOAD_ATTEMPTS)
    moved = FailedPrecondition("offset", violations=(FieldViolation("start.offset", "5"),))
    assert is_resumable(moved, 2)
    assert not is_resumable(InvalidArgument("bad sha256"), 1)
