"""One proxied request, end to end, as a sans-IO state machine.

Owns: the order of decisions for one request (route, authenticate, room binding, body limit,
model grant, price check, rewrite), feeding the response through the usage meter, and building
the single `UsageRecord` every request ends in, clean ending or not.

States and transitions (every other call raises `ExchangeStateError`):

    AWAIT_HEAD --request_head()--> AWAIT_BODY           (the head is acceptable so far)
               \\-------------->   DONE                 (Reject: refused before the body)
    AWAIT_BODY --request_body()--> FORWARDED            (Forward: send this upstream)
               \\-------------->   AWAIT_OWNERSHIP      (CheckOwnership: look up an owner)
               \\-------------->   DONE                 (Reject)
    AWAIT_OWNERSHIP --ownership_known()--> FORWARDED | DONE
    FORWARDED  --response_head()--> STREAMING
               \\--upstream_failed()--> DONE            (Reject-shaped 502/504 for the client)
    STREAMING  --response_data()*--> STREAMING
               \\--finish(ending)--> DONE
    any state before DONE --abandon(ending)--> DONE    (client gone before a response existed)

An adapter reads, calls, writes, and hands `record` to its sinks once the state is DONE.

Does not own: sockets, timers, retries, the clock (every time is an argument), or where records
go. Usage parsing lives in usage/, prices in pricing, header rules in headers.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal

import attrs

from . import auth, ownership, policy, routes, sse
from . import headers as header_rules
from .config import ProviderSettings, ProxyConfig
from .encoding import ContentDecoder, DecodingError
from .errors import (
    BodyTooLarge,
    ModelNotPriced,
    ObjectNotFound,
    ProxyError,
    RoomMismatch,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_body,
    stream_error_event,
)
from .pricing import PriceBook, add_costs
from .records import (
    Cost,
    Ending,
    LineItem,
    Outcome,
    Principal,
    Usage,
    UsageRecord,
    UsageSource,
)
from .usage import Metering, RequestFacts, UsageMeter
from .usage.request_facts import read_request
from .usage.select import meter_for

__all__ = [
    "CheckOwnership",
    "Exchange",
    "ExchangeStateError",
    "Forward",
    "NeedBody",
    "Proxy",
    "Reject",
    "ResponseHead",
]

Headers = Sequence[tuple[bytes, bytes]]


class ExchangeStateError(RuntimeError):
    """An adapter called the exchange out of order: a bug in the adapter, never in the input."""


class _State(enum.Enum):
    AWAIT_HEAD = "await_head"
    AWAIT_BODY = "await_body"
    AWAIT_OWNERSHIP = "await_ownership"
    FORWARDED = "forwarded"
    STREAMING = "streaming"
    DONE = "done"


@attrs.frozen
class Reject:
    """Answer the client with this response; nothing goes upstream."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@attrs.frozen
class NeedBody:
    """The head is acceptable; read at most `max_bytes` of body and call `request_body`."""

    max_bytes: int


@attrs.frozen
class Forward:
    """Send this request upstream."""

    method: str
    url: str
    headers: list[tuple[bytes, bytes]]
    body: bytes


@attrs.frozen
class CheckOwnership:
    """Look up who owns an object (or what the caller's room owns), then call
    `ownership_known`: the request names stored objects (meshproxy_core.ownership)."""

    check: ownership.OwnershipCheck
    project: str
    room: str


@attrs.frozen
class ResponseHead:
    status: int
    headers: list[tuple[bytes, bytes]]


class Exchange:
    """Created by `Proxy.exchange()`; one per client request."""

    def __init__(
        self,
        config: ProxyConfig,
        verifier: auth.TokenVerifier,
        prices: PriceBook | None,
        *,
        request_id: str,
        now: float,
        principal: Principal | None = None,
        enforce_prices: bool = True,
        project_prices: Mapping[str, PriceBook] | None = None,
    ) -> None:
        self._config = config
        self._verifier = verifier
        self._prices = prices
        self._project_prices = project_prices or {}
        self._authenticated = principal
        self._enforce_prices = enforce_prices
        self._request_id = request_id
        self._started_at = now
        self._state = _State.AWAIT_HEAD
        self._method = ""
        self._route: routes.Route | None = None
        self._provider: str | None = None
        self._principal: Principal | None = None
        self._client_headers: Headers = ()
        self._facts: RequestFacts | None = None
        self._status = 0
        self._meter: UsageMeter | None = None
        self._decoder: ContentDecoder | None = None
        self._deliver_decoded = False
        self._decode_failed = False
        self._event_stream = False
        self._fragment_parts: list[bytes] = []  # an event stream's incomplete last event, held
        self._fragment = b""  # the held bytes' tail, where a terminator may begin
        self._upstream_request_id: str | None = None
        self._settings: ProviderSettings | None = None
        self._upstream_body = b""
        self._check: ownership.OwnershipCheck | None = None
        self.record: UsageRecord | None = None

    @property
    def request_id(self) -> str:
        return self._request_id

    @property
    def principal(self) -> Principal | None:
        return self._principal

    @property
    def route(self) -> routes.Route | None:
        return self._route

    # -- request side -----------------------------------------------------------------------

    def request_head(
        self, method: str, target: str, headers: Headers, *, content_length: int | None
    ) -> Reject | NeedBody:
        """Decide everything that needs no body: path, method, token, room, declared size."""
        self._expect(_State.AWAIT_HEAD)
        self._method = method
        self._client_headers = headers
        try:
            self._route = routes.match_route(method, target, mount=self._config.mount)
            self._provider = self._route.provider
            principal = self._authenticated or self._verifier.verify(
                auth.extract_token(self._route.provider, headers), now=self._started_at
            )
            session = headers_value_str(headers, header_rules.SESSION_HEADER)
            if session:
                principal = attrs.evolve(principal, session=session)
            self._principal = principal
            # A project's negotiated prices replace the list prices for its requests.
            self._prices = self._project_prices.get(principal.project, self._prices)
            if self._route.room is not None and self._route.room != principal.room:
                raise RoomMismatch(self._route.provider)
            settings = self._config.project(principal.project)
            policy.check_app(
                self._route.provider,
                settings.app_filter if settings is not None else None,
                headers_value_str(headers, b"user-agent"),
            )
            if content_length is not None and content_length > self._config.max_body_bytes:
                raise BodyTooLarge(self._route.provider)
        except ProxyError as refusal:
            return self._refuse(refusal)
        self._state = _State.AWAIT_BODY
        return NeedBody(self._config.max_body_bytes)

    def body_too_large(self) -> Reject:
        """The adapter read more than `NeedBody.max_bytes` of body."""
        self._expect(_State.AWAIT_BODY)
        return self._refuse(BodyTooLarge(self._provider))

    def request_body(self, body: bytes) -> Reject | Forward | CheckOwnership:
        """Decide what needs the body (model grant, price, ownership), and rewrite the request."""
        self._expect(_State.AWAIT_BODY)
        route, principal = self._route, self._principal
        assert route is not None and principal is not None
        try:
            if len(body) > self._config.max_body_bytes:
                raise BodyTooLarge(route.provider)
            content_type = headers_value_str(self._client_headers, b"content-type")
            batch_id = (
                route.object_id if route.kind is routes.EndpointKind.MESSAGE_BATCH_RESULTS else None
            )
            facts, upstream_body = read_request(
                route.provider,
                route.kind.value,
                content_type,
                body,
                batch_id=batch_id,
                public_base_url=self._public_base_url(),
                creates=ownership.creates(route),
            )
            self._facts = facts
            if route.kind not in routes.FREE_KINDS:
                for model in (facts.model, *facts.batch_models):
                    self._check_model(route, principal, model)
            if facts.names_conversation:
                raise ObjectNotFound(route.provider)
            self._settings = self._config.provider_settings(
                route.provider, principal.project, principal.room
            )
        except ProxyError as refusal:
            return self._refuse(refusal)
        self._upstream_body = upstream_body
        check = ownership.check_for(route, facts.previous_response_id)
        if check is not None:
            self._check = check
            self._state = _State.AWAIT_OWNERSHIP
            return CheckOwnership(check, project=principal.project, room=principal.room)
        return self._forward(route.query)

    def ownership_known(
        self,
        *,
        owner: tuple[str, str] | None = None,
        owned_ids: Iterable[str] | None = None,
    ) -> Reject | Forward:
        """The answer to `CheckOwnership`: the (project, room) owning the named object (None:
        nobody, or unknown), or the ids the caller's room owns (for a listing)."""
        self._expect(_State.AWAIT_OWNERSHIP)
        route, principal, facts, check = self._route, self._principal, self._facts, self._check
        assert route is not None and principal is not None and facts is not None
        assert check is not None
        query = route.query
        if check.object_id is not None and owner != (principal.project, principal.room):
            return self._refuse(ObjectNotFound(route.provider))
        if check.list_owned:
            query, limit, backwards = ownership.list_query(route.query)
            self._facts = attrs.evolve(
                facts,
                owned_ids=frozenset(owned_ids or ()),
                page_limit=limit,
                page_backwards=backwards,
            )
        return self._forward(query)

    def _forward(self, query: str) -> Forward:
        route, facts, settings = self._route, self._facts, self._settings
        assert route is not None and facts is not None and settings is not None
        self._state = _State.FORWARDED
        return Forward(
            method=self._method,
            url=settings.upstream_url(route.provider, route.upstream_path, query),
            headers=header_rules.request_headers_upstream(
                self._client_headers,
                credentials=_credentials(route.provider, settings),
                defaults=self._default_headers(route.provider),
                identity_only=facts.rewrites_response(),
            ),
            body=self._upstream_body,
        )

    def _check_model(self, route: routes.Route, principal: Principal, model: str | None) -> None:
        """The token and the project must allow the model, and the book must price it."""
        auth.check_model_grant(principal, route.provider, model)
        policy.check_project_model(self._config.project(principal.project), route.provider, model)
        if not self._enforce_prices or self._prices is None or model is None:
            return
        # A batch's requests are Messages requests, billed when the results are read.
        kind = "messages" if route.kind is routes.EndpointKind.MESSAGE_BATCHES else route.kind.value
        if not self._prices.can_price(route.provider, kind, model):
            raise ModelNotPriced(route.provider, model)

    def _default_headers(self, provider: str) -> list[tuple[bytes, bytes]]:
        if provider == "anthropic":
            return [(b"anthropic-version", self._config.default_anthropic_version.encode())]
        return []

    def _public_base_url(self) -> str | None:
        """Where clients reach this proxy, for URLs the proxy writes into responses (batch
        `results_url`): `[proxy] public_url`, else the request's own Host over plain http (set
        `public_url` behind TLS). A Host that is not a plain host[:port] gives none."""
        route = self._route
        if route is None:
            return None
        public = self._config.public_url
        if public is None:
            host = headers_value_str(self._client_headers, b"host")
            if host is None or not _HOST.fullmatch(host):
                return None
            public = f"http://{host}"
        base = public.rstrip("/") + self._config.mount
        if route.room is not None:
            base += f"/rooms/{route.room}"
        return base + ("/anthropic/v1" if route.provider == "anthropic" else "/openai/v1")

    # -- response side ----------------------------------------------------------------------

    def response_head(self, status: int, upstream_headers: Headers) -> ResponseHead:
        self._expect(_State.FORWARDED)
        facts = self._facts
        assert facts is not None
        self._status = status
        self._upstream_request_id = headers_value_str(
            upstream_headers, b"x-request-id"
        ) or headers_value_str(upstream_headers, b"request-id")
        content_type = headers_value_str(upstream_headers, b"content-type")
        encoding = headers_value_str(upstream_headers, b"content-encoding")
        self._meter = meter_for(facts, status, content_type)
        self._event_stream = (content_type or "").startswith("text/event-stream")
        self._decoder = ContentDecoder(encoding)
        # A meter that rewrites the stream works on decoded bytes; if the upstream compressed
        # anyway (it was asked for identity), the client gets the decoded bytes, relabelled.
        self._deliver_decoded = facts.rewrites_response() and not self._decoder.is_identity
        out_headers = header_rules.response_headers_to_client(
            upstream_headers,
            request_id=self._request_id,
            body_rewritten=facts.rewrites_response(),
        )
        if self._deliver_decoded:
            out_headers = [(k, v) for k, v in out_headers if k != b"content-encoding"]
        self._state = _State.STREAMING
        return ResponseHead(status, out_headers)

    def response_data(self, chunk: bytes) -> bytes:
        """Feed upstream body bytes; returns the bytes to send to the client."""
        self._expect(_State.STREAMING)
        meter, decoder = self._meter, self._decoder
        assert meter is not None and decoder is not None
        if self._decode_failed:
            return chunk
        if decoder.is_identity:
            return self._whole_events(meter.feed(chunk))
        try:
            decoded = decoder.decode(chunk)
        except DecodingError:
            self._decode_failed = True
            return chunk
        delivered = meter.feed(decoded)
        return self._whole_events(delivered) if self._deliver_decoded else chunk

    def _whole_events(self, data: bytes) -> bytes:
        """For event streams, deliver up to the last complete event and hold the fragment after
        it (providers write whole events, so this is almost always empty). The bytes are the
        same; only where they are cut moves. It lets a stream cut by the upstream end on an
        event boundary, so the error event the proxy appends is read as an error, not glued to
        half an event that the SDK would fail to decode."""
        if not self._event_stream:
            return data
        if not self._fragment_parts and data[-2:] == b"\n\n":
            return data  # the usual chunk: whole events, nothing held
        # Search only the new bytes, plus the last few held ones (a terminator may straddle the
        # two): a multi-MB image event arriving in many chunks is scanned once, not re-scanned.
        overlap = self._fragment[-3:]
        end = sse.last_event_end(overlap + data)
        if end == -1:
            self._fragment_parts.append(data)
            self._fragment = (overlap + data[-3:])[-3:]
            return b""
        end -= len(overlap)
        held = b"".join(self._fragment_parts)
        self._fragment_parts = [data[end:]] if end < len(data) else []
        self._fragment = data[end:][-3:]
        return held + data[:end] if held else data[:end]

    def finish(self, ending: Ending, *, now: float) -> bytes:
        """The response ended (cleanly or not). Returns held-back bytes still to send; the
        record is then in `self.record`."""
        self._expect(_State.STREAMING)
        meter, decoder = self._meter, self._decoder
        assert meter is not None and decoder is not None
        tail = b""
        if not decoder.is_identity and not self._decode_failed:
            try:
                rest = decoder.flush()
                if rest:
                    delivered = meter.feed(rest)
                    tail = self._whole_events(delivered) if self._deliver_decoded else b""
            except DecodingError:
                # A cut stream cannot end its compressed body; only a clean end that does not
                # decode means the bytes were unreadable.
                self._decode_failed = ending is Ending.COMPLETE
        held, metering = meter.finish(ending is Ending.COMPLETE)
        if self._decode_failed:
            metering = attrs.evolve(metering, source=UsageSource.UNPARSEABLE)
        elif metering.terminated:
            # The provider's answer had ended ([DONE], message_stop…): a connection closed after
            # that (openai-python closes at [DONE]) lost nothing. The record says complete.
            ending = Ending.COMPLETE
        self._complete(ending, now, metering)
        fragment = b"".join(self._fragment_parts)
        self._fragment_parts, self._fragment = [], b""
        if ending is Ending.COMPLETE:
            return fragment + tail + held  # an unterminated last event, as the upstream sent it
        # Cut: the half event is dropped (a client discards it anyway, WHATWG §9.2.6).
        return tail + held + self._cut_stream_event(ending)

    def _cut_stream_event(self, ending: Ending) -> bytes:
        """Close a cut event stream with an error event, so the client gets a well-formed stream
        that its SDK turns into an exception instead of a silent truncation."""
        if ending not in (Ending.UPSTREAM_FAILED, Ending.TIMEOUT) or self._status >= 400:
            return b""
        if not self._event_stream or not (self._decoder_identity() or self._deliver_decoded):
            return b""
        refusal = UpstreamTimeout if ending is Ending.TIMEOUT else UpstreamUnavailable
        return stream_error_event(self._provider, refusal.message, refusal.code)

    def _decoder_identity(self) -> bool:
        return self._decoder is not None and self._decoder.is_identity

    def upstream_failed(self, ending: Ending, *, now: float) -> Reject:
        """The upstream could not be reached, or reset/timed out before a response head."""
        self._expect(_State.FORWARDED)
        refusal: ProxyError = (
            UpstreamTimeout(self._provider)
            if ending is Ending.TIMEOUT
            else UpstreamUnavailable(self._provider)
        )
        reject = self._error_response(refusal)
        self._status = reject.status
        self._complete(ending, now, Metering(), outcome=Outcome.FAILED, error=refusal)
        return reject

    def abandon(self, ending: Ending, *, now: float) -> None:
        """The client went away, or the proxy is shutting down, before any response existed."""
        if self._state is _State.DONE:
            return
        if self._state is _State.STREAMING:
            self.finish(ending, now=now)
            return
        outcome = Outcome.FAILED if self._state is _State.FORWARDED else Outcome.REJECTED
        self._complete(ending, now, Metering(), outcome=outcome)

    # -- records ----------------------------------------------------------------------------

    def _refuse(self, refusal: ProxyError) -> Reject:
        reject = self._error_response(refusal)
        self._status = reject.status
        self._complete(
            Ending.COMPLETE, self._started_at, Metering(), outcome=Outcome.REJECTED, error=refusal
        )
        return reject

    def _error_response(self, refusal: ProxyError) -> Reject:
        provider = refusal.provider or self._provider
        body = error_body(
            provider, refusal.status, refusal.message, refusal.code, request_id=self._request_id
        )
        head = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", self._request_id.encode()),
            (header_rules.PROXY_REQUEST_ID_HEADER, self._request_id.encode()),
            *refusal.extra_headers(),
        ]
        if provider == "anthropic":
            head.append((b"request-id", self._request_id.encode()))
        return Reject(refusal.status, head, body)

    def _complete(
        self,
        ending: Ending,
        now: float,
        metering: Metering,
        *,
        outcome: Outcome | None = None,
        error: ProxyError | None = None,
    ) -> None:
        facts = self._facts
        route = self._route
        partial = ending is not Ending.COMPLETE and outcome is None
        if outcome is None:
            outcome = self._outcome(ending, metering)
        usage = metering.usage
        cost, line_items = (
            self._price(usage, metering) if not usage.is_zero() else (None, metering.line_items)
        )
        self.record = UsageRecord(
            id=self._request_id,
            request_id=self._request_id,
            provider=(route.provider if route else self._provider) or "",
            endpoint=route.kind.value if route else "",
            method=self._method,
            path=route.upstream_path if route else "",
            status=self._status,
            outcome=outcome,
            ending=ending,
            started_at=self._started_at,
            ended_at=now,
            principal=self._principal,
            model=facts.model if facts else None,
            response_model=metering.response_model,
            stream=facts.stream if facts else False,
            usage=usage,
            usage_source=metering.source,
            partial=partial,
            service_tier=metering.service_tier,
            error_type=metering.error_type,
            error_code=error.code if error is not None else metering.error_code,
            reject_reason=error.code if error is not None and outcome is Outcome.REJECTED else None,
            raw_usage=metering.raw_usage,
            cost=cost,
            upstream_request_id=self._upstream_request_id,
            batch_id=metering.batch_id,
            batch_custom_ids=metering.batch_custom_ids,
            line_items=line_items,
            created_object_kind=facts.creates if metering.created_object_id else None,
            created_object_id=metering.created_object_id,
        )
        self._state = _State.DONE

    def _outcome(self, ending: Ending, metering: Metering) -> Outcome:
        if self._status >= 400:
            return Outcome.UPSTREAM_ERROR
        if ending is not Ending.COMPLETE:
            return Outcome.PARTIAL
        if metering.error_type is not None:
            return Outcome.UPSTREAM_ERROR
        return Outcome.OK

    def _price(self, usage: Usage, metering: Metering) -> tuple[Cost | None, tuple[LineItem, ...]]:
        route, facts = self._route, self._facts
        if self._prices is None or route is None or facts is None:
            return None, metering.line_items
        if metering.line_items:
            items = tuple(
                attrs.evolve(
                    item,
                    cost=self._price_one(
                        route.provider, (item.model, facts.model), item.usage, metering, True
                    ),
                )
                for item in metering.line_items
            )
            return add_costs(item.cost for item in items if item.cost is not None), items
        batch = route.kind is routes.EndpointKind.MESSAGE_BATCH_RESULTS
        models = (metering.response_model, facts.model)
        return self._price_one(route.provider, models, usage, metering, batch), ()

    def _price_one(
        self,
        provider: str,
        models: tuple[str | None, ...],
        usage: Usage,
        metering: Metering,
        batch: bool,
    ) -> Cost:
        """Price by the first of `models` the book knows (the provider's own answer first: it
        names the snapshot that ran); a model it does not know is a cost marked incomplete."""
        assert self._prices is not None
        for model in models:
            if model and self._prices.resolve(provider, model) is not None:
                return self._prices.price(
                    provider, model, usage, service_tier=metering.service_tier, batch=batch
                )
        return Cost(
            total=_ZERO,
            incomplete=True,
            missing_units=("model",),
            price_version=self._prices.version,
        )

    def _expect(self, state: _State) -> None:
        if self._state is not state:
            raise ExchangeStateError(f"expected state {state.value}, in {self._state.value}")


class Proxy:
    """The immutable proxy: configuration, verifier and price book shared by all exchanges."""

    def __init__(
        self,
        config: ProxyConfig,
        *,
        verifier: auth.TokenVerifier | None = None,
        prices: PriceBook | None = None,
        ids: Callable[[], str] | None = None,
    ) -> None:
        self.config = config
        # Each project with `[projects.ID.prices]` gets the book with its overrides applied.
        self.project_prices = {
            project_id: prices.with_overrides(settings.prices)
            for project_id, settings in config.projects.items()
            if prices is not None and settings.prices
        }
        self.verifier = verifier or auth.HS256Verifier(config.secrets, leeway=config.leeway_seconds)
        self.prices = prices
        self._ids = ids or _random_id

    def exchange(
        self,
        *,
        now: float,
        request_id: str | None = None,
        principal: Principal | None = None,
        enforce_prices: bool = True,
    ) -> Exchange:
        """A new exchange. `principal`: the caller was authenticated already (an embedding app
        that did its own auth, or offline accounting of a log); no token is then read.
        `enforce_prices=False` accounts models the book cannot price instead of refusing them
        (offline accounting, where the request has long been answered)."""
        return Exchange(
            self.config,
            self.verifier,
            self.prices,
            request_id=request_id or self._ids(),
            now=now,
            principal=principal,
            enforce_prices=enforce_prices,
            project_prices=self.project_prices,
        )


def _credentials(provider: str, settings: ProviderSettings) -> list[tuple[bytes, bytes]]:
    assert settings.api_key
    if provider == "anthropic":
        return [(b"x-api-key", settings.api_key.encode())]
    creds = [(b"authorization", b"Bearer " + settings.api_key.encode())]
    if settings.organization:
        creds.append((b"openai-organization", settings.organization.encode()))
    if settings.project:
        creds.append((b"openai-project", settings.project.encode()))
    return creds


def headers_value_str(items: Headers, name: bytes) -> str | None:
    value = header_rules.header_value(items, name)
    return value.decode("latin-1") if value is not None else None


def _random_id() -> str:
    # secrets.token_hex, without its three Python-level calls: this runs on every request.
    return "req_" + os.urandom(16).hex()


_ZERO = Decimal(0)
# A Host header fit to be written into a URL: a name or address, an optional port.
_HOST = re.compile(r"(?:[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
