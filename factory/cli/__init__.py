"""The ``factory`` command line. Each command lives in its own module here and
registers itself on :data:`factory.cli.app.app` when imported below."""
from factory.cli.app import app  # noqa: F401

# One import per command module; importing registers the commands.
from factory.cli import train_cmd  # noqa: F401,E402
from factory.cli import degrade_cmd  # noqa: F401,E402
from factory.cli import sample_cmd  # noqa: F401,E402
from factory.cli import generate_cmd  # noqa: F401,E402
from factory.cli import structures_cmd  # noqa: F401,E402
from factory.cli import consume_cmd  # noqa: F401,E402
from factory.cli import crlb_cmd  # noqa: F401,E402
from factory.cli import evaluate_cmd  # noqa: F401,E402
from factory.cli import calibrate_cmd  # noqa: F401,E402
from factory.cli import care_cmd  # noqa: F401,E402
from factory.cli import train_smlm_cmd  # noqa: F401,E402
from factory.cli import restore_cmd  # noqa: F401,E402


def main() -> None:
    app()
