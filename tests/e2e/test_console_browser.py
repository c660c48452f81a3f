"""The web console in a real headless browser (Debian's chromium through its chromium-driver,
tests/console_browser.py) against a real `maas up --auth`: every page renders without a
script error; a training job's curve gains points while it runs; a digit drawn on the pad
gets the prediction of the `digits-cnn` just trained and an Integrated-Gradients heat map;
one tenant never sees another's model; a form action whose CSRF field was removed is
refused; markup in a value from the API is shown as text.

With MAAS_SCREENSHOTS=1 each page is also saved to docs/console/ (the README links them;
MAAS_SCREENSHOTS=DIR saves them in DIR)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from safetensors.torch import save
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver import Chrome
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

import maas
from maas.cli.demo import DEMO_SPEC
from maas.training_client import TrainingJobHandle
from maas.v1 import training_service_pb2 as tpb
from runtime.architectures import get_architecture
from tests.console_browser import PHONE, Console, Up, headless_chromium, running_up

pytestmark = pytest.mark.timeout(120)

MARKUP = "<img src=x onerror=alert(1)>"
Job = tpb.TrainingJob
ENDED = ("SUCCEEDED", "FAILED", "CANCELLED")
# What `maas up`'s demo trains, in 3 epochs (a few seconds here, ~95 % validation accuracy).
DIGITS_CNN = {**DEMO_SPEC, "epochs": 3}
# Long enough to be still running when the forged cancel arrives.
LONG = {"architecture": "cnn", "dataset": "digits", "batch_size": 8, "epochs": 50, "seed": 0}


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_up(tmp_path_factory.mktemp("console-browser") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def keys(up: Up) -> dict[str, str]:
    """API keys of tenants acme and globex (infer, train), and the admin's."""
    with maas.Client(up.target, api_key=up.admin_key) as admin:
        made = {t: admin.create_key(t, ["infer", "train"]).api_key for t in ("acme", "globex")}
    return {**made, "admin": up.admin_key}


@pytest.fixture(scope="module")
def browser() -> Iterator[Chrome]:
    """One browser for the module."""
    with headless_chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def console(browser: Chrome, up: Up) -> Console:
    return Console(browser, up.console)


@pytest.fixture(scope="module")
def digits_cnn(up: Up, keys: dict[str, str]) -> Iterator[TrainingJobHandle]:
    """`digits-cnn` being trained by tenant acme (submitted, not awaited)."""
    with maas.Client(up.target, api_key=keys["acme"]) as sdk:
        handle = sdk.train(DIGITS_CNN)
        yield handle
        handle.wait(timeout_s=90)


@pytest.mark.parametrize("path, heading, shot", [
    ("/models", "Models", "models"), ("/models/cnn", "cnn", ""),
    ("/training", "Training jobs", "training"), ("/queues", "Queues", "queues"),
    ("/workers", "Workers", "workers"), ("/try", "Try a model", ""),
])
def test_every_page_renders_without_script_errors(console: Console, keys: dict[str, str],
                                                  path: str, heading: str, shot: str) -> None:
    console.log_in(keys["admin"])
    console.open(path)
    assert console.text("h1") == heading
    assert "PERMISSION_DENIED" not in console.text("main")
    if path == "/workers":
        assert "worker-1" in console.text("main")
    if shot:
        console.screenshot(shot)
    assert console.script_errors() == []


CURVE = """
const d = document.querySelector('#loss-chart path')?.getAttribute('d') || '';
return [(d.match(/[ML]/g) || []).length, document.getElementById('state').textContent];
"""


def test_a_training_curve_gains_points_while_the_job_runs(
        console: Console, keys: dict[str, str], digits_cnn: TrainingJobHandle) -> None:
    console.log_in(keys["acme"])
    console.open(f"/training/{digits_cnn.id}")
    seen: list[tuple[int, str]] = []  # (points on the loss curve, the state shown)
    deadline = time.monotonic() + 240  # a few seconds alone; CI's other processes may slow it
    while time.monotonic() < deadline and (not seen or seen[-1][1] not in ENDED):
        points, state = console.js(CURVE)
        if not seen or seen[-1] != (points, state):
            seen.append((points, state))
        time.sleep(0.05)
    assert seen[-1][1] == "SUCCEEDED", seen
    running = [points for points, state in seen if state == "RUNNING" and points > 0]
    assert len(set(running)) >= 2, seen  # drawn, then redrawn with more points, while running
    assert seen[-1][0] > running[0]
    console.until(lambda d: "digits-cnn:1" in console.text("#result"))
    console.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "button.danger"))  # no cancel
    dots = console.js("return document.querySelectorAll('#accuracy-chart circle').length")
    assert dots == DIGITS_CNN["epochs"]
    assert len(console.driver.find_elements(By.CSS_SELECTOR, "#epochs tbody tr")) == dots
    console.screenshot("training-job")
    console.screenshot("training-job-phone", PHONE)
    assert console.script_errors() == []
    console.open("/models/digits-cnn")
    assert "Lineage of version" in console.text("main")
    console.screenshot("model-lineage")


def draw_a_one(console: Console) -> None:
    """A vertical stroke down the middle of the pad, pointer down to pointer up."""
    pad = console.driver.find_element(By.ID, "pad")
    stroke = ActionChains(console.driver).move_to_element_with_offset(pad, 0, -90)
    stroke.click_and_hold()
    for dy in range(-75, 91, 15):
        stroke.move_to_element_with_offset(pad, 0, dy)
    stroke.release().perform()


HEAT = """
const c = document.getElementById('heatmap'), px = c.getContext('2d')
  .getImageData(0, 0, c.width, c.height).data;
let tinted = 0;
for (let i = 0; i < px.length; i += 4) if (px[i] !== px[i + 2]) tinted += 1;
return tinted;
"""


def test_a_drawn_digit_gets_the_trained_models_prediction_and_heat_map(
        console: Console, keys: dict[str, str], digits_cnn: TrainingJobHandle) -> None:
    assert digits_cnn.wait(timeout_s=90).state == Job.SUCCEEDED
    console.log_in(keys["acme"])
    console.open("/try")
    root = console.driver.find_element(By.ID, "try")  # the trained model is the default
    assert (root.get_attribute("data-model"), root.get_attribute("data-version")) == \
        ("digits-cnn", "1")
    draw_a_one(console)
    assert console.js("return document.getElementById('pad').getContext('2d')"
                      ".getImageData(140, 140, 1, 1).data[0]") == 255  # white ink, centre
    console.driver.find_element(By.ID, "predict").click()
    console.until(lambda d: console.text("#prediction"))
    assert console.text("#prediction") == "Predicted class: 1", console.text("#outputs")
    assert len(console.driver.find_elements(By.CSS_SELECTOR, "#probabilities rect")) == 10
    console.driver.find_element(By.ID, "explain").click()
    console.until(lambda d: console.text("#explain-note"))
    assert console.text("#explain-note").startswith("class 1, f(x) = ")
    assert console.js(HEAT) > 1000  # red or blue over most of the 280x280 map
    assert console.text("#try-error") == ""
    console.screenshot("try-a-model")
    assert console.script_errors() == []


def test_a_tenant_does_not_see_another_tenants_model(console: Console, up: Up,
                                                     keys: dict[str, str]) -> None:
    arch = get_architecture("mlp")
    weights = save(arch.build(arch.resolve_config(None)).state_dict())
    with maas.Client(up.target, api_key=keys["globex"]) as globex:
        globex.register_model("globex-secret", "mlp", weights)
    console.log_in(keys["globex"])
    console.open("/models")
    assert "globex-secret" in console.text("main")  # it is there, for its owner
    console.log_in(keys["acme"])
    console.open("/models")
    listed = console.text("main")
    assert "cnn" in listed and "globex-secret" not in listed
    console.open("/models/globex-secret")
    assert console.text("h1") == "NOT_FOUND"


@pytest.fixture(scope="module")
def long_job(up: Up, keys: dict[str, str]) -> Iterator[TrainingJobHandle]:
    """A long job of tenant acme whose request id (free text) is markup; cancelled after."""
    with maas.Client(up.target, api_key=keys["acme"]) as sdk:
        handle = sdk.train({"model_name": "console-long", **LONG}, request_id=MARKUP)
        yield handle
        handle.cancel()
        handle.wait(timeout_s=60)  # sooner than `maas up` stopping a running job


def test_a_form_without_its_csrf_token_is_refused(console: Console, keys: dict[str, str],
                                                  long_job: TrainingJobHandle) -> None:
    console.log_in(keys["acme"])
    for forge in ("field.remove()", "field.value = 'forged'"):
        console.open(f"/training/{long_job.id}")
        console.js("const field = document.querySelector("
                   f"'form[action$=\"/cancel\"] input[name=csrf_token]'); {forge};")
        console.driver.find_element(By.CSS_SELECTOR, "button.danger").click()
        console.until(lambda d: "403 Forbidden" in console.text("body"))
        assert "missing or wrong CSRF token" in console.text("body")
        assert long_job.refresh().state in (Job.QUEUED, Job.RUNNING)
    console.script_errors()  # the 403 itself is logged


def assert_no_markup_ran(console: Console) -> None:
    assert console.driver.find_elements(By.CSS_SELECTOR, "main img") == []
    with pytest.raises(NoAlertPresentException):
        console.driver.switch_to.alert.accept()


def test_markup_from_the_api_is_shown_as_text(console: Console, keys: dict[str, str],
                                               long_job: TrainingJobHandle) -> None:
    console.log_in(keys["acme"])
    console.open(f"/training/{long_job.id}")
    shown = console.driver.find_element(By.XPATH, "//dt[.='Request id']/following-sibling::dd")
    assert shown.text == MARKUP
    assert_no_markup_ran(console)
    console.open("/models/" + MARKUP.replace(" ", "%20"))  # named in the NOT_FOUND message
    assert console.text("h1") == "NOT_FOUND" and MARKUP in console.text("main")
    assert_no_markup_ran(console)
