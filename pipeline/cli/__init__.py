"""The `pipeline` command: thin click commands over the Python API (pipeline.api).

Process-wide choices that a library must not make for its caller (pipeline.process) are
made here, at the entry point, and only for the command that needs them.
"""

from __future__ import annotations

import functools
import sys

import click

from pipeline.errors import PipelineError, os_error_message, report_file_size_limit


class OneLineErrors(click.Group):
    """Every error, usage errors included, as one line `Error: ...` and exit status 1."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        report_file_size_limit()
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.Abort:
            click.echo("Error: aborted", err=True)
            sys.exit(1)
        except click.ClickException as err:
            message = " ".join(err.format_message().split())
            hint = ""
            if isinstance(err, click.UsageError) and err.ctx is not None:
                hint = f" (see `{err.ctx.command_path} --help`)"
            click.echo(f"Error: {message}{hint}", err=True)
            sys.exit(1)


def user_errors(command):
    """A PipelineError or OSError becomes one line `Error: ...`, never a traceback."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PipelineError as err:
            raise click.ClickException(str(err)) from None
        except MemoryError:
            raise click.ClickException("out of memory; use a smaller --max-tokens, "
                                       "--batch-size or --max-memory") from None
        except OSError as err:  # a full disk or a file size limit says what to do
            raise click.ClickException(os_error_message(err)) from None
    return wrapper


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pipeline-latents")
def main():
    """Token classifiers on cached hidden states of a frozen transformer.

    \b
    pipeline embed corpus.txt --out cache/      # one pass of the model -> HDF5 shards
    pipeline fit cache/ --out head/             # train a head on the cache, in seconds
    pipeline predict head/ "Call me Ishmael."   # per-word labels from model + head
    """


from pipeline.cli import cache_commands, embed_command, head_commands  # noqa: E402,F401
