"""Every error the package raises or returns per item descends from :class:`AutoDemoError`.

The tree (every class the package defines and raises, with the module that defines it
where that is not this one; ``ValueError`` and friends are mixed in where a caller would
already catch them)::

    AutoDemoError
    ├── AutoDemoInputError (+ValueError)      an input item that cannot be asked (names it)
    ├── AutoDemoItemError                      an input that got no trustworthy answer
    │   └── AutoDemoModelCallError             ... because its model call raised; every
    │                                          instance is also an instance of the
    │                                          provider's exception type (RateLimitError, ...)
    ├── ConfigurationError (+ValueError)       a bad argument to a constructor or command
    │   ├── ModelSpecError                     a model spec that cannot be used (models)
    │   ├── DatasetError                       a dataset name, file or record
    │   │                                      (evaluation.datasets)
    │   ├── MethodError                        an evaluation method name (evaluation.methods)
    │   ├── OutputError                        an output file that cannot be resumed
    │   │                                      (cli.resume)
    │   ├── BadInputError                      input lines that cannot be asked, every one
    │   │                                      (cli.inputs)
    │   ├── OutputFileError                    an unreadable file of a Ray output folder
    │   │                                      (ray_data)
    │   └── BatchJobStateError                 a job state file that belongs to another job
    │                                          (batch_api.errors; also a BatchApiError)
    ├── EvaluationError                        an evaluation step the model failed (every call
    │                                          of a method, or calls of a bootstrap pool build)
    ├── BatchApiError                          a Batch API job cannot go on (batch_api.errors)
    │   ├── BatchRequestError                  one request of a batch failed at the provider
    │   └── BatchJobStateError (+ConfigurationError)  (the same class as above)
    ├── ModelNotFoundError (+FileNotFoundError) a local model file is missing (local_models)
    ├── ModelFetchError (+RuntimeError)        a local model could not be assembled: pip
    │                                          download failed or the checksum differs
    │                                          (local_models)
    └── LlamaCppServerError (+RuntimeError)   the local llama.cpp server did not start
                                               (llamacpp)

Exported from ``langchain_autodemo``: AutoDemoError, AutoDemoInputError, AutoDemoItemError,
AutoDemoModelCallError, ConfigurationError and EvaluationError; the others from the module
named beside them.

Catch :class:`AutoDemoError` for anything the package decided; catch the provider's own
exception types (``openai.RateLimitError``) for model-call failures, exactly as without
the package: ``runner.with_retry(retry_if_exception_type=(openai.RateLimitError,))`` and
``with_fallbacks(exceptions_to_handle=...)`` work on them.
"""

from __future__ import annotations

import contextlib
import re
import threading
from typing import Any

__all__ = [
    "AutoDemoError",
    "AutoDemoInputError",
    "AutoDemoItemError",
    "AutoDemoModelCallError",
    "ConfigurationError",
    "Rejection",
    "call_failure",
    "model_call_error",
    "redact_model_text",
]


class AutoDemoError(Exception):
    """Base class of every error this package raises or returns."""


class ConfigurationError(AutoDemoError, ValueError):
    """A bad argument to a constructor or a command (the message is meant for the user)."""


class EvaluationError(AutoDemoError):
    """An evaluation step that cannot give a meaningful result because the model calls
    failed (a stopped server, a wrong URL); the message says what was kept."""


#: How much of an input an error message quotes.
EXCERPT_CHARS = 60

#: What a redacted reason shows in place of the model text it quoted.
REDACTED = "<model text>"


class Rejection(str):
    """Why one attempt at an item was rejected: a ``str`` (its full text, as reasons
    always were) that keeps apart what the package wrote and what the model wrote.

    Under a packed call the model's text (a restatement, a rejected answer, a parser's
    message about it) may be another input's, so whoever must not see other inputs gets
    :meth:`redacted`, which drops exactly :attr:`quote`. Every reason the engine gives
    is a ``Rejection``; plain strings (older pickles) are redacted by pattern
    (:func:`redact_model_text`).

    Attributes:
        kind: what went wrong, stable and free of model text: the text before the
            first colon (``"restated question matches no input of the batch"``,
            ``"model call failed"``, ``"cut off"``).
        message: the text the package wrote, without the quote.
        quote: the model text the reason quotes, or ``None``.
        slots: the prompt slots (1-based question numbers of the call) it names, as
            evidence that says which questions without quoting them.

    Example:
        >>> r = Rejection("restated question matches no input: restated as ", quote="Q of B")
        >>> r
        "restated question matches no input: restated as 'Q of B'"
        >>> r.redacted()
        'restated question matches no input: restated as <model text>'
        >>> r.kind
        'restated question matches no input'
    """

    kind: str
    message: str
    quote: str | None
    slots: tuple[int, ...]
    _plain: bool

    def __new__(
        cls,
        message: str,
        *,
        quote: str | None = None,
        plain: bool = False,
        slots: tuple[int, ...] = (),
    ) -> Rejection:
        shown = "" if quote is None else (quote if plain else repr(quote))
        self = super().__new__(cls, message + shown)
        self.message = message
        self.quote = quote
        self.slots = tuple(slots)
        self.kind = message.split(":", 1)[0].strip()
        self._plain = plain
        return self

    def redacted(self) -> Rejection:
        """The same reason without the model text it quotes."""
        if self.quote is None:
            return self
        return Rejection(self.message + REDACTED, plain=True, slots=self.slots)

    def __reduce__(self) -> Any:  # keep the parts across pickling (LangServe, Ray)
        return (_rejection, (self.message, self.quote, self._plain, self.slots))


def _rejection(message: str, quote: str | None, plain: bool, slots: tuple[int, ...]) -> Rejection:
    return Rejection(message, quote=quote, plain=plain, slots=slots)


#: The phrases after which a reason quotes the model's text (a restatement, a rejected
#: answer, a parser's message about it): the engine writes them, and reasons written
#: before they were structured are redacted by them.
RESTATED_AS = ": restated as "
PLACEHOLDER_ANSWER = "answered with the prompt's placeholder: "
UNPARSED_ANSWER = "answer could not be parsed: "


def call_failure(error: BaseException | None) -> Rejection:
    """The reason of an item whose model call raised ``error`` (the provider's text is
    the provider's, not another input's: it is kept)."""
    return Rejection(f"model call failed: {type(error).__name__}: {error}")


# The phrases that introduce model text in reasons written before reasons were
# structured (a plain string cannot say where its quote is): redact_model_text removes
# exactly what they introduce.
_LEGACY_MODEL_TEXT = re.compile(
    "("
    + "|".join(re.escape(p) for p in (RESTATED_AS, PLACEHOLDER_ANSWER, UNPARSED_ANSWER))
    + ")"
    + r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|.*)"""
)


def redact_model_text(reason: str) -> str:
    """``reason`` without the model text it quotes, for a caller who must not see other
    inputs: exact for a :class:`Rejection`, by pattern for a plain string.

    Example:
        >>> redact_model_text("restated question matches no input: restated as 'Q of B'")
        'restated question matches no input: restated as <model text>'
    """
    if isinstance(reason, Rejection):
        return reason.redacted()
    return _LEGACY_MODEL_TEXT.sub(r"\1" + REDACTED, reason)


def _item_label(index: int, input_excerpt: str | None) -> str:
    """``item 2`` or, with an excerpt, ``item 2 ('What is 13 - 4?')`` (cut to
    :data:`EXCERPT_CHARS` characters with an ellipsis)."""
    if input_excerpt is None:
        return f"item {index}"
    text = " ".join(input_excerpt.split())
    if len(text) > EXCERPT_CHARS:
        text = text[: EXCERPT_CHARS - 1].rstrip() + "…"
    return f"item {index} ({text!r})"


def _item_message(
    index: int, reason: str, attempts: int, reasons: tuple[str, ...], input_excerpt: str | None
) -> str:
    """The message of an item error: the last reason, and every different earlier one."""
    earlier: list[str] = []
    for previous in reasons:
        if previous != reason and previous not in earlier:
            earlier.append(previous)
    tail = f"; earlier: {'; '.join(earlier)}" if earlier else ""
    return f"{_item_label(index, input_excerpt)}: {reason} (after {attempts} attempt(s){tail})"


def _rebuild(cls: type[Any], args: tuple[Any, ...], excerpt: str | None) -> Any:
    return cls(*args, input_excerpt=excerpt)


class AutoDemoInputError(AutoDemoError, ValueError):
    """An input item that cannot be asked: empty, of the wrong type, or missing a key.

    With ``return_exceptions=True`` it takes that item's place and the other inputs are
    still answered; without it, ``batch()`` raises it before any model call.

    Attributes:
        index: position of the input in the list given to the call that raised it
            (``batch()``, or the part of a list that a driver passed on).
        reason: what is wrong with it.
        input_excerpt: the start of the input, quoted in the message, when known.
    """

    def __init__(self, index: int, reason: str, *, input_excerpt: str | None = None) -> None:
        super().__init__(f"{_item_label(index, input_excerpt)}: {reason}")
        self.index = index
        self.reason = reason
        self.input_excerpt = input_excerpt

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), (self.index, self.reason), self.input_excerpt))


class AutoDemoItemError(AutoDemoError):
    """An input that got no trustworthy answer after every allowed attempt.

    Raised by ``batch()`` (or returned in its place with ``return_exceptions=True``),
    it says which input and why, so an item is never silently empty.

    The message names the last attempt's reason and, when earlier attempts failed
    otherwise, each different earlier reason: ``item 2: restated question matches no
    input (after 3 attempt(s); earlier: cut off: the stream ended without ...)``.

    Attributes:
        index: position of the input in the list given to the call that raised it
            (``batch()``, or the part of a list that a driver passed on).
        reason: why the last attempt failed (missing, truncated, misaligned, ...).
        attempts: how many model calls tried to answer it.
        reasons: the rejection reason of every attempt, oldest first.
        input_excerpt: the start of the input, quoted in the message, when known.
    """

    def __init__(
        self,
        index: int,
        reason: str,
        attempts: int,
        reasons: tuple[str, ...] = (),
        *,
        input_excerpt: str | None = None,
    ) -> None:
        reasons = reasons or (reason,)
        super().__init__(_item_message(index, reason, attempts, reasons, input_excerpt))
        self.index = index
        self.reason = reason
        self.attempts = attempts
        self.reasons = reasons
        self.input_excerpt = input_excerpt

    def redacted(self) -> AutoDemoItemError:
        """The same error without the model text its reasons quote (see
        :class:`Rejection`), for a caller who must not see the other inputs of a packed
        call: its message is rebuilt from the redacted reasons, so no earlier attempt's
        text survives in it. A model call's error keeps its provider type and cause."""
        reason = redact_model_text(self.reason)
        reasons = tuple(redact_model_text(r) for r in self.reasons)
        cause = self.__cause__
        if isinstance(self, AutoDemoModelCallError) and cause is not None:
            return model_call_error(
                cause, self.index, self.attempts, reasons, input_excerpt=self.input_excerpt
            )
        return AutoDemoItemError(
            self.index, reason, self.attempts, reasons, input_excerpt=self.input_excerpt
        )

    def __reduce__(self) -> Any:  # keep the structured fields across pickling (LangServe)
        return (
            _rebuild,
            (
                AutoDemoItemError,
                (self.index, self.reason, self.attempts, self.reasons),
                self.input_excerpt,
            ),
        )


class AutoDemoModelCallError(AutoDemoItemError):
    """An item whose last model call raised.

    Never instantiated directly: :func:`model_call_error` builds a class that derives
    from both this one and the provider's exception type, so the caller can catch either.
    ``__cause__`` is the original exception, and its attributes (``status_code``,
    ``response``, ...) are copied onto the error.
    """

    def __str__(
        self,
    ) -> str:  # the provider's own __str__ (openai reads .message) would hide the item
        return str(self.args[0]) if self.args else self.reason


_classes: dict[type[BaseException], type[AutoDemoModelCallError]] = {}
_classes_lock = threading.Lock()


def _class_for(cause_type: type[BaseException]) -> type[AutoDemoModelCallError] | None:
    with _classes_lock:
        cls = _classes.get(cause_type)
        if cls is None:
            try:
                cls = type(
                    cause_type.__name__,
                    (AutoDemoModelCallError, cause_type),
                    {"__module__": cause_type.__module__, "__qualname__": cause_type.__qualname__},
                )
            except TypeError:  # an exception type that cannot be subclassed or mixed
                return None
            _classes[cause_type] = cls
        return cls


def model_call_error(
    cause: BaseException,
    index: int,
    attempts: int,
    reasons: tuple[str, ...] = (),
    *,
    input_excerpt: str | None = None,
) -> AutoDemoModelCallError:
    """The error for item ``index`` whose model call raised ``cause``.

    The result is an instance of ``type(cause)`` *and* of :class:`AutoDemoItemError`,
    with ``index``, ``reason``, ``attempts``, ``input_excerpt`` set and ``__cause__``
    kept.

    Example:
        >>> error = model_call_error(TimeoutError("read timed out"), index=3, attempts=2)
        >>> isinstance(error, TimeoutError), isinstance(error, AutoDemoItemError)
        (True, True)
        >>> str(error)
        'item 3: model call failed: TimeoutError: read timed out (after 2 attempt(s))'
    """
    reason = call_failure(cause)
    cls = _class_for(type(cause)) or AutoDemoModelCallError
    # The provider's __init__ wants its own arguments (a response, a body): build the
    # instance without it and copy the state instead.
    error = cls.__new__(cls)
    with contextlib.suppress(AttributeError, TypeError):
        error.__dict__.update(getattr(cause, "__dict__", {}))
    error.reasons = reasons or (reason,)
    error.args = (_item_message(index, reason, attempts, error.reasons, input_excerpt),)
    error.index = index
    error.reason = reason
    error.attempts = attempts
    error.input_excerpt = input_excerpt
    error.__cause__ = cause
    return error
