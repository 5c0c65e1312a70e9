"""The ``notifications:`` section: what loads, and one clear line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantmesh.config.load import parse_settings, render_effective
from quantmesh.config.notifications import NotificationEvent, NotificationEventChoice, channel_names
from quantmesh.errors import ConfigError
from quantmesh.notify.events import EVENT_KINDS
from quantmesh.wiring import secret_values

BASE = "trading:\n  symbols:\n    - {symbol: ETHUSDT, price_interval: 5, order_quantity: 30}\n"
ENV = {"TELEGRAM_BOT_TOKEN": "123:tok-abc", "TELEGRAM_CHAT_ID": "-1001", "HOOK": "https://h/x"}


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(BASE + text, env=ENV)
    return caught.value.problems


def test_every_channel_type_loads_with_tokens_from_the_environment() -> None:
    settings = parse_settings(
        BASE
        + """
notifications:
  daily_summary_at: 21:00     # unquoted: YAML 1.1 reads it as 1260
  channels:
    - {type: webhook, webhook_url: "${HOOK}", secret: shared-secret}
    - {type: telegram, token: "${TELEGRAM_BOT_TOKEN}", chat_id: "${TELEGRAM_CHAT_ID}"}
    - {type: slack, webhook_url: "https://hooks.slack.com/services/T/B/X", min_level: warning}
    - {type: discord, webhook_url: "https://discord.com/api/webhooks/1/y", events: [round_trip]}
    - {type: webhook, webhook_url: "https://b/y"}
""",
        env=ENV,
    )
    notify = settings.notifications
    assert notify.daily_summary_at == "21:00" and str(notify.daily_summary_time) == "21:00:00"
    telegram = notify.channels[1]
    assert telegram.token is not None and telegram.token.get_secret_value() == "123:tok-abc"
    assert telegram.chat_id == "-1001" and telegram.api_base == "https://api.telegram.org"
    assert channel_names(notify.channels) == [
        "webhook",
        "telegram",
        "slack",
        "discord",
        "webhook-2",
    ]
    secrets = secret_values(settings)
    for secret in (
        "https://h/x",
        "shared-secret",
        "123:tok-abc",
        "https://discord.com/api/webhooks/1/y",
    ):
        assert secret in secrets


def test_the_defaults_send_nothing() -> None:
    notify = parse_settings(BASE, env={}).notifications
    assert notify.channels == () and notify.daily_summary_at == "00:00"
    assert (
        parse_settings(
            BASE + "notifications:\n  daily_summary_at: null\n", env={}
        ).notifications.daily_summary_time
        is None
    )


def test_the_event_names_agree_everywhere() -> None:
    assert set(EVENT_KINDS) == set(NotificationEvent.__args__)  # type: ignore[attr-defined]
    assert set(NotificationEventChoice.__args__) == {"all", *EVENT_KINDS}  # type: ignore[attr-defined]


def test_each_problem_is_one_line_naming_the_key() -> None:
    found = problems(
        """
notifications:
  daily_summary_at: "25:00"
  channels:
    - {type: webhok, webhook_url: "https://a/b"}
    - {type: webhook, webhook_url: "ftp://secret-host/path"}
    - {type: telegram, chat_id: 5, webhook_url: "https://a/b"}
    - {type: slack, webhook_url: "https://a/b", events: [round_trips], min_level: high}
    - {type: discord}
"""
    )
    expected = [
        (
            "notifications.channels[0].type: must be one of webhook, telegram, slack, discord "
            "(got 'webhok') (did you mean 'webhook'?)"
        ),
        "notifications.channels[1].webhook_url: must be an http:// or https:// URL",
        "notifications.channels[2].webhook_url: not a key of type telegram: remove it",
        (
            "notifications.channels[2].token: required for type telegram: the bot token from "
            "@BotFather, e.g. token: ${TELEGRAM_BOT_TOKEN}"
        ),
        (
            "notifications.channels[3].events[0]: must be one of all, instance_started, "
            "instance_stopped, symbol_taken_over, lock_halted, lock_recovered, db_outage_began, "
            "db_outage_ended, risk_triggered, orders_rejected, daily_summary, round_trip (got "
            "'round_trips') (did you mean 'round_trip'?)"
        ),
        (
            "notifications.channels[3].min_level: must be one of info, warning, critical "
            "(got 'high')"
        ),
        (
            "notifications.channels[4].webhook_url: required for type discord: the endpoint's http(s) "
            "URL, e.g. webhook_url: ${WEBHOOK_URL}"
        ),
        "notifications.daily_summary_at: must be a UTC time HH:MM, e.g. '21:00'",
    ]
    assert found == expected
    assert not any("secret-host" in line for line in found)


def test_a_credential_given_as_a_number_is_refused_without_echoing_it() -> None:
    found = problems(
        """
notifications:
  channels:
    - {type: telegram, token: 123456789, chat_id: 1}
    - {type: slack, webhook_url: [98765432]}
"""
    )
    assert found == [
        "notifications.channels[0].token: must be text: put it in quotes",
        "notifications.channels[1].webhook_url: must be text: put it in quotes",
    ]


def test_two_channels_may_not_share_a_name() -> None:
    assert problems(
        """
notifications:
  channels:
    - {type: slack, webhook_url: "https://a/b"}
    - {type: webhook, webhook_url: "https://a/c", name: slack}
"""
    ) == [
        "notifications.channels[1].name: duplicate of channels[0] (slack): give each its own name"
    ]


def test_check_config_masks_webhook_urls_secrets_and_tokens() -> None:
    settings = parse_settings(
        BASE
        + """
notifications:
  channels:
    - {type: slack, webhook_url: "https://hooks.slack.com/services/T0/B0/PATHTOKEN"}
    - {type: webhook, webhook_url: "https://h/x", secret: shared-secret}
    - {type: telegram, token: "${TELEGRAM_BOT_TOKEN}", chat_id: "${TELEGRAM_CHAT_ID}"}
""",
        env=ENV,
    )
    out = render_effective(settings)
    for secret in ("PATHTOKEN", "https://h/x", "shared-secret", "tok-abc"):
        assert secret not in out
    assert out.count("webhook_url: '***'") == 2 and "chat_id: '-1001'" in out


def test_the_live_example_channels_load_once_uncommented() -> None:
    path = Path(__file__).resolve().parents[2] / "config" / "config.live.example.yaml"
    text = path.read_text(encoding="utf-8")
    section = text[text.index("\nnotifications:") :]
    uncommented = "\n".join(
        line[:2] + line[4:] if line.startswith("  # ") else line
        for line in section.splitlines()
        if line != "  channels: []"
    )
    env = {**ENV, "ALERT_WEBHOOK_URL": "https://a/b", "ALERT_WEBHOOK_SECRET": "s"}
    env["SLACK_WEBHOOK_URL"] = "https://hooks.slack.com/x"
    settings = parse_settings(BASE + uncommented, env=env)
    assert [c.type for c in settings.notifications.channels] == ["telegram", "webhook", "slack"]
    assert settings.notifications.daily_summary_at == "21:00"
