"""The service facade: ingest, hash, search, review and readiness, over store, index and matcher.

The HTTP API is a thin layer over this class. Each worker process has one instance; its index is
loaded from the store in a background thread (readiness says ``loading`` until then) and kept in
step with other workers' writes by polling the library watermark every
``DHASH_INDEX_SYNC_SECONDS``. Every write commits before the method returns, so what the API
acknowledges is durable.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Literal, cast

from alembic.script import ScriptDirectory
from sqlalchemy import exc as sa_exc

from dhash_service import faults
from dhash_service.config import Settings
from dhash_service.digest import DigestResult, digest
from dhash_service.errors import ConfigError, DhashError, InputError, Unavailable
from dhash_service.extraction import ItemFailure, Limits
from dhash_service.extraction.limits import RequestBudget
from dhash_service.extraction.sniff import sniff
from dhash_service.hashing import ALGORITHMS, ImageHash, algorithm_spec, configured_algorithm
from dhash_service.index import HammingIndex, new_index
from dhash_service.index.sync import IndexSync, LibraryBatch
from dhash_service.logs import get_logger, redact_text
from dhash_service.matching import (
    MAX_RADIUS,
    Candidate,
    Decision,
    Thresholds,
    candidate_confidence,
    decide,
)
from dhash_service.review import ReviewQueue
from dhash_service.review_desk import ReviewDesk
from dhash_service.sandbox import DecoderPool, isolated_kind
from dhash_service.sandbox.pool import ChildLimits
from dhash_service.schemas import (
    FailureOut,
    HashedItemOut,
    HashReport,
    ImageOut,
    IngestReport,
    ItemOut,
    MatchOut,
    Readiness,
    ReviewItemOut,
)
from dhash_service.store import schema
from dhash_service.store.console import ConsoleStore
from dhash_service.store.repository import (
    ContentRecord,
    DuplicateContent,
    ImageRecord,
    NewContent,
    NewImage,
    NewMatch,
    NewReview,
    NewThumbnail,
    Repository,
    SavedContent,
    StoredHash,
)
from dhash_service.thumbnails import Thumbnail

log = get_logger(__name__)

# Candidates kept per decision (and stored as matches); more only matter for ambiguity.
MATCHES_PER_ITEM = 10
CANDIDATES_CONSIDERED = 256
MAX_SEARCH_LIMIT = 1000
# Text columns hold at most this many characters (names, sources, locators).
MAX_TEXT = 1024


def storable_text(value: str, limit: int = MAX_TEXT) -> str:
    """Text any backend accepts: no NUL (PostgreSQL refuses it), no lone surrogates, bounded.

    Over-long text keeps its start and gets a digest of the whole, so two long locators of one
    upload still differ.
    """
    clean = value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    if len(clean) <= limit:
        return clean
    digest = hashlib.sha256(clean.encode("utf-8")).hexdigest()[:16]
    return f"{clean[: limit - 17]}~{digest}"


def resolve_auto_migrate(settings: Settings) -> bool:
    """Explicit setting wins; unset means: only a SQLite store in development migrates itself."""
    if settings.auto_migrate is not None:
        return settings.auto_migrate
    return schema.is_sqlite(settings.effective_database_url) and settings.env == "development"


def _failure_out(failure: ItemFailure) -> FailureOut:
    return FailureOut(
        locator=failure.locator, error=failure.error.code, message=failure.error.message
    )


def _match_out(
    image_id: int, distance: int, hash_hex: str, ref_source: str | None, ref_locator: str | None
) -> MatchOut:
    return MatchOut(
        image_id=image_id, distance=distance, hash=hash_hex, source=ref_source, locator=ref_locator
    )


class DhashService:
    """One per worker process; thread-safe (the API calls it from a thread pool)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.algorithm = configured_algorithm(settings.hash_algorithm, settings.hash_size)
        self.bits = algorithm_spec(self.algorithm).bits
        self.thresholds = Thresholds(
            match=settings.match_threshold,
            review=settings.review_threshold,
            ambiguity_margin=settings.ambiguity_margin,
        )
        if settings.index_sync_seconds <= 0:
            raise ConfigError("DHASH_INDEX_SYNC_SECONDS must be > 0")
        self.limits = Limits.from_settings(settings)
        self._sync = IndexSync(
            lambda: new_index(settings.index_kind, self.bits), self._fetch_library
        )
        self._auto_migrate = resolve_auto_migrate(settings)
        self._repository: Repository | None = None
        self._reviews: ReviewQueue | None = None
        self._desk: ReviewDesk | None = None
        self._head = schema.head_revision()
        self._known_revisions = {
            r.revision for r in ScriptDirectory(str(schema.MIGRATIONS_DIR)).walk_revisions()
        }
        self._schema_status = "not started"
        self._sync_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for name in ("request_time_budget_seconds", "document_time_budget_seconds"):
            if getattr(settings, name) <= 0:
                raise ConfigError(f"DHASH_{name.upper()} must be > 0")
        if settings.decoder_processes < 0 or settings.decoder_memory_bytes < 256 * 1024 * 1024:
            raise ConfigError(
                "need DHASH_DECODER_PROCESSES >= 0 and DHASH_DECODER_MEMORY_BYTES >= 256 MiB"
            )
        self.decoders: DecoderPool | None = None

    # --- life cycle ------------------------------------------------------------------------------

    @property
    def index(self) -> HammingIndex:
        """The current index (replaced wholesale when the library is reloaded)."""
        return self._sync.index

    def start(self) -> None:
        """Connect and return; migrating (if configured), loading and following the index happen
        in a background thread, so a slow or absent database never blocks or kills the worker:
        readiness says what is missing."""
        engine = schema.create_engine_for(self.settings.effective_database_url)
        self._repository = Repository(engine)
        self._reviews = ReviewQueue(self._repository)
        self._desk = ReviewDesk(
            self._reviews,
            self._repository,
            ConsoleStore(engine),
            algorithm=self.algorithm,
            claim_seconds=self.settings.review_claim_seconds,
        )
        if self.settings.decoder_processes > 0 and self.decoders is None:
            self.decoders = DecoderPool(
                self.settings.decoder_processes,
                ChildLimits(self.settings.decoder_memory_bytes, self.settings.decoder_cpu_seconds),
                queue_seconds=self.settings.admission_queue_seconds,
            )
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, name="dhash-index-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.decoders is not None:
            self.decoders.close()
            self.decoders = None
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._repository is not None:
            self._repository.engine.dispose()

    @property
    def serving(self) -> bool:
        """The schema fits and the index is loaded: requests get real answers, not 503."""
        return self._sync.loaded and self._schema_status == "ok"

    def wait_until_ready(self, timeout: float) -> bool:
        """Block until the index is loaded (tests, CLI tools); False on timeout."""
        deadline = time.monotonic() + timeout
        while not self.serving:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _follow(self) -> None:
        """Background loop: check the schema, load the index once, then poll for new members."""
        while True:
            try:
                if self._auto_migrate:
                    self._migrate_if_behind()
                self._schema_status = self._check_schema()
                if self._schema_status == "ok":
                    if not self._sync.loaded:
                        count = self._sync.load()
                        log.info("index_loaded", hashes=count, algorithm=self.algorithm)
                    else:
                        reloads = self._sync.reloads
                        added = self._sync.poll()
                        if self._sync.reloads != reloads:
                            log.warning("index_reloaded_after_restore", hashes=len(self.index))
                        elif added:
                            log.info("index_synced", added=added, watermark=self._sync.watermark)
                self._sync_error = None
            except Exception as exc:  # the store may be down: keep the last good index, retry
                self._sync_error = redact_text(f"{type(exc).__name__}: {exc}")
                log.warning("index_sync_failed", error=self._sync_error)
            if self._stop.wait(self.settings.index_sync_seconds):
                return

    def _migrate_if_behind(self) -> None:
        """Auto-migrate: upgrade a database that is behind; leave one that is ahead alone."""
        current = schema.engine_revision(self._repo.engine)
        if current != self._head and (current is None or current in self._known_revisions):
            schema.upgrade(self.settings.effective_database_url)
            log.info("schema_migrated", revision=self._head, was=current)
        self._auto_migrate = False

    def _check_schema(self) -> str:
        current = schema.engine_revision(self._repo.engine)
        if current == self._head:
            return "ok"
        if current is not None and current not in self._known_revisions:
            # A newer release migrated ahead (expand-only, docs/deploy.md): this code still fits,
            # so the old release keeps serving during a deploy and after an app rollback.
            return "ok"
        return f"database at {current or 'no revision'}, code expects {self._head}"

    def _fetch_library(self, after: int, limit: int) -> LibraryBatch:
        return self._repo.library_since(self.algorithm, self.bits, after, limit)

    @property
    def _repo(self) -> Repository:
        if self._repository is None:
            raise Unavailable("the service has not been started")
        return self._repository

    @contextmanager
    def _store_errors(self) -> Iterator[None]:
        """A database that is down or refuses us is a 503, never a traceback."""
        try:
            yield
        except DhashError:
            raise
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
            # The driver's message names hosts and ports: it goes to the log, not on the wire.
            message = redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            log.warning("store.unavailable", error=type(exc).__name__, message=message)
            raise Unavailable("the store is unavailable; retry shortly") from exc

    def _require_index(self) -> None:
        if self._schema_status != "ok":
            log.warning("schema.not_ready", status=self._schema_status)
            raise Unavailable(
                "the service is not ready: its schema is not at the expected revision"
            )
        if not self._sync.loaded:
            raise Unavailable("the index is still loading")

    # --- readiness -------------------------------------------------------------------------------

    def readiness(self) -> Readiness:
        checks: dict[str, str] = {}
        if self._repository is None:
            checks["store"] = "not started"
        else:
            try:
                self._repository.ping()
                checks["store"] = "ok"
                checks["migrations"] = self._check_schema()
            except Exception as exc:
                checks["store"] = redact_text(f"unreachable: {type(exc).__name__}")
        checks.setdefault("migrations", self._schema_status)
        if self._sync.loaded:
            checks["index"] = "ok"
        elif self._sync_error:
            checks["index"] = "failed"  # the error (hosts, ports) is in the log, not on the wire
        else:
            checks["index"] = "loading"
        return Readiness(ready=all(v == "ok" for v in checks.values()), checks=checks)

    # --- hashing and ingest ----------------------------------------------------------------------

    def isolates(self, data: bytes) -> bool:
        """Whether this upload is decoded in a child process (PDF, video, ZIP) when hashed."""
        return self.decoders is not None and isolated_kind(sniff(data).kind)

    def _digest(
        self, data: bytes, filename: str | None, cancelled: threading.Event | None
    ) -> DigestResult:
        """Extract and hash under the request's total budget: documents in a decoder child,
        images (whose cost the header bounds) here."""
        pool = self.decoders
        if pool is not None and isolated_kind(sniff(data).kind):
            request = RequestBudget(self.settings.document_time_budget_seconds, cancelled)
            return pool.digest(
                data,
                filename=filename,
                algorithm=self.algorithm,
                limits=self.limits,
                request=request,
            )
        seconds = self.settings.request_time_budget_seconds
        if isolated_kind(sniff(data).kind):
            seconds = self.settings.document_time_budget_seconds
        return digest(
            data,
            filename=filename,
            algorithm=self.algorithm,
            limits=self.limits,
            request=RequestBudget(seconds, cancelled),
        )

    def hash_only(
        self,
        data: bytes,
        *,
        filename: str | None = None,
        cancelled: threading.Event | None = None,
    ) -> tuple[HashReport, DigestResult]:
        """Hash an upload without storing or matching anything."""
        result = self._digest(data, filename, cancelled)
        items = [
            HashedItemOut(
                locator=item.locator,
                kind=item.kind,
                width=item.width,
                height=item.height,
                hash=item.hash.hex(),
                algorithm=item.hash.algorithm,
                low_information=item.hash.low_information,
            )
            for item in result.items
        ]
        report = HashReport(
            input_kind=result.input_kind,
            items=items,
            failures=[_failure_out(f) for f in result.failures],
        )
        return report, result

    def ingest(
        self,
        data: bytes,
        *,
        filename: str | None = None,
        library: bool = False,
        source: str | None = None,
        actor: str = "api",
        cancelled: threading.Event | None = None,
    ) -> tuple[IngestReport, DigestResult]:
        """Extract, hash, match, decide and store an upload; committed before it returns.

        The same bytes twice are stored once (sha256): the second call reports ``duplicate`` and
        the stored decisions, and only adds the images to the library if asked to.
        """
        if source is not None and len(source) > MAX_TEXT:
            raise InputError(f"source must be at most {MAX_TEXT} characters")
        self._require_index()
        sha256 = hashlib.sha256(data).hexdigest()
        with self._store_errors():
            lookup = self._repo.ingest_lookup(sha256)
        if lookup.content_id is not None:
            return self._duplicate(lookup.content_id, library=library, actor=actor)
        result = self._digest(data, filename, cancelled)
        failures = [_failure_out(f) for f in result.failures]
        if not result.items:  # nothing to remember: a retry after fixing limits must not dedupe
            return IngestReport(
                sha256=sha256,
                input_kind=result.input_kind,
                library=False,
                duplicate=False,
                items=[],
                failures=failures,
            ), result
        # Library images other workers committed before this request, searchable before we
        # match: the lookup read the newest membership id, so with nothing new this costs nothing.
        self._refresh_index(lookup.newest_member_id)
        new = NewContent(
            sha256=sha256,
            input_kind=result.input_kind,
            size_bytes=len(data),
            filename=storable_text(filename) if filename is not None else None,
            source=storable_text(source) if source is not None else None,
            failures=[f.model_dump() for f in failures],
            images=[
                self._decide_item(
                    item.hash,
                    item.locator,
                    item.kind,
                    item.width,
                    item.height,
                    thumbnail=item.thumbnail,
                )
                for item in result.items
            ],
            library=library,
            actor=actor,
        )
        with self._store_errors():
            try:
                saved = self._repo.store_content(new)
            except DuplicateContent:
                report, _ = self._duplicate(
                    self._repo.content_id_by_sha256(sha256) or 0, library=library, actor=actor
                )
                return report, result
            if library:
                self._refresh_index()
        log.info(
            "ingested",
            sha256=sha256,
            images=len(new.images),
            library=library,
            decisions=[i.decision for i in new.images],
        )
        return self._new_report(new, saved, failures), result

    def _new_report(
        self, new: NewContent, saved: SavedContent, failures: list[FailureOut]
    ) -> IngestReport:
        """The answer to a first ingest, from what was just written (the same as reading it back,
        which a duplicate does: ``tests/integration/test_ingest_report.py`` holds them equal)."""
        digits = self.bits // 4
        items = []
        for image, ids in zip(new.images, saved.images, strict=True):
            matches = []
            for m in image.matches:
                ref = saved.refs[m.library_image_id]
                value = "" if m.library_hash is None else f"{m.library_hash:0{digits}x}"
                matches.append(
                    _match_out(m.library_image_id, m.distance, value, ref.source, ref.locator)
                )
            items.append(
                ItemOut(
                    image_id=ids.id,
                    locator=image.locator,
                    kind=image.kind,
                    width=image.width,
                    height=image.height,
                    hash=image.hash.hex(),
                    algorithm=image.hash.algorithm,
                    low_information=image.hash.low_information,
                    decision=cast(Literal["match", "review", "new"], image.decision),
                    confidence=image.confidence,
                    matches=matches,
                    review_id=ids.review_id,
                )
            )
        return IngestReport(
            sha256=new.sha256,
            input_kind=new.input_kind,
            library=new.library,
            duplicate=False,
            items=items,
            failures=failures,
        )

    def _decide_item(
        self,
        image_hash: ImageHash,
        locator: str,
        kind: str,
        width: int,
        height: int,
        *,
        thumbnail: Thumbnail | None = None,
    ) -> NewImage:
        neighbors = self.index.search(
            image_hash.value, self.thresholds.review, limit=CANDIDATES_CONSIDERED
        )
        candidates = [
            Candidate(int(i), int(d), v)
            for i, d, v in zip(
                neighbors.ids.tolist(), neighbors.distances.tolist(), neighbors.values, strict=True
            )
        ]
        decision = decide(
            candidates, low_information=image_hash.low_information, thresholds=self.thresholds
        )
        decision = faults.decided(decision)  # review forced by an injected fault, else as is
        return NewImage(
            locator=storable_text(locator),
            kind=kind,
            width=width,
            height=height,
            hash=StoredHash(
                image_hash.value, image_hash.algorithm, image_hash.bits, image_hash.low_information
            ),
            decision=decision.kind,
            confidence=decision.confidence,
            matches=self._matches_to_store(decision, image_hash.low_information),
            review=self._review_to_store(decision),
            thumbnail=None
            if thumbnail is None
            else NewThumbnail(
                thumbnail.data, thumbnail.width, thumbnail.height, thumbnail.media_type
            ),
        )

    def _matches_to_store(self, decision: Decision, low_information: bool) -> list[NewMatch]:
        return [
            NewMatch(
                library_image_id=c.image_id,
                rank=rank,
                distance=c.distance,
                confidence=candidate_confidence(c.distance, low_information, self.thresholds),
                library_hash=c.value,
            )
            for rank, c in enumerate(decision.candidates[:MATCHES_PER_ITEM])
        ]

    @staticmethod
    def _review_to_store(decision: Decision) -> NewReview | None:
        if decision.kind != "review" or decision.reason is None:
            return None
        best = decision.best
        return NewReview(
            candidate_image_id=best.image_id if best else None,
            distance=best.distance if best else None,
            confidence=decision.confidence,
            reason=decision.reason,
        )

    def _duplicate(
        self, content_id: int, *, library: bool, actor: str
    ) -> tuple[IngestReport, DigestResult]:
        with self._store_errors():
            if library and self._repo.add_content_to_library(content_id, actor):
                self._refresh_index()
            stored = self._repo.get_content(content_id, self.algorithm)
        nothing_hashed = DigestResult(input_kind=stored.input_kind, items=[], failures=[])
        return self._ingest_report(stored, duplicate=True), nothing_hashed

    def _refresh_index(self, newest: int | None = None) -> None:
        """Catch up with the library before answering: our own writes, and those other workers
        committed before this request, are searchable now, not at the next background poll (an
        integrator who adds a library image and queries at once must find it). One indexed
        query past the watermark (none when the caller has just read the ``newest`` membership id
        and it is the watermark); the background poll keeps an idle worker current."""
        try:
            self._sync.poll(newest)
        except Exception as exc:  # committed already; the poller will pick it up
            log.warning("index_refresh_failed", error=redact_text(str(exc)))

    def _ingest_report(self, stored: ContentRecord, *, duplicate: bool) -> IngestReport:
        return IngestReport(
            sha256=stored.sha256,
            input_kind=stored.input_kind,
            library=stored.library,
            duplicate=duplicate,
            items=[self._item_out(image) for image in stored.images],
            failures=[FailureOut(**f) for f in stored.failures],
        )

    def _item_out(self, image: ImageRecord) -> ItemOut:
        image_hash = self._hash_of(image)
        return ItemOut(
            image_id=image.id,
            locator=image.locator,
            kind=image.kind,
            width=image.width,
            height=image.height,
            hash=image_hash.hex(),
            algorithm=image_hash.algorithm,
            low_information=image_hash.low_information,
            decision=cast(Literal["match", "review", "new"], image.decision),
            confidence=image.confidence,
            matches=[
                _match_out(
                    m.image_id, m.distance, m.hash.hex() if m.hash else "", m.source, m.locator
                )
                for m in image.matches
            ],
            review_id=image.review_id,
        )

    def _hash_of(self, image: ImageRecord) -> StoredHash:
        if image.hash is not None:
            return image.hash
        return self._repo.any_hash(image.id)

    # --- reads -----------------------------------------------------------------------------------

    def get_image(self, image_id: int) -> ImageOut:
        with self._store_errors():
            image = self._repo.get_image(image_id, self.algorithm)
            image_hash = self._hash_of(image)
        return ImageOut(
            id=image.id,
            sha256=image.sha256,
            source=image.source,
            locator=image.locator,
            kind=image.kind,
            width=image.width,
            height=image.height,
            algorithm=image_hash.algorithm,
            hash=image_hash.hex(),
            low_information=image_hash.low_information,
            library=image.library,
            decision=cast(Literal["match", "review", "new"], image.decision),
            confidence=image.confidence,
            created_at=image.created_at,
        )

    def search(
        self, hash_hex: str, radius: int, algorithm: str | None = None, limit: int = 100
    ) -> list[MatchOut]:
        """Library images within ``radius`` bits of a hex hash, nearest first (ties by id)."""
        name = algorithm or self.algorithm
        if name != self.algorithm:
            algorithm_spec(name)  # unknown ids get their own clear error
            raise InputError(
                f"this service indexes {self.algorithm} hashes, not {name}",
                detail={"algorithm": name, "indexed": self.algorithm, "known": list(ALGORITHMS)},
            )
        query = ImageHash.from_hex(hash_hex, name)
        if not 0 <= radius <= MAX_RADIUS:
            raise InputError(
                f"radius must be between 0 and {MAX_RADIUS}, got {radius}",
                detail={"radius": radius},
            )
        if not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise InputError(f"limit must be between 1 and {MAX_SEARCH_LIMIT}, got {limit}")
        self._require_index()
        self._refresh_index()
        neighbors = self.index.search(query.value, radius, limit=limit)
        ids = neighbors.ids.tolist()
        with self._store_errors():
            refs = self._repo.image_refs(ids)
        digits = self.bits // 4
        out = []
        for image_id, distance, value in zip(
            ids, neighbors.distances.tolist(), neighbors.values, strict=True
        ):
            ref = refs.get(image_id)
            out.append(
                _match_out(
                    image_id,
                    distance,
                    f"{value:0{digits}x}",
                    ref.source if ref else None,
                    ref.locator if ref else None,
                )
            )
        return out

    # --- review queue ----------------------------------------------------------------------------

    @property
    def _queue(self) -> ReviewQueue:
        if self._reviews is None:
            raise Unavailable("the service has not been started")
        return self._reviews

    def review_items(
        self, status: str = "pending", limit: int = 100, offset: int = 0
    ) -> list[ReviewItemOut]:
        with self._store_errors():
            return self._queue.items(status, limit, offset)

    def get_review_item(self, item_id: int) -> ReviewItemOut:
        with self._store_errors():
            return self._queue.get(item_id)

    def resolve_review(
        self,
        item_id: int,
        action: Literal["confirm", "reject"],
        reviewer: str,
        *,
        via: str = "api",
    ) -> ReviewItemOut:
        with self._store_errors():
            return self._queue.resolve(item_id, action, reviewer, via=via)

    @property
    def desk(self) -> ReviewDesk:
        """The review console's use cases (``review_desk``); decisions take the path above."""
        if self._desk is None:
            raise Unavailable("the service has not been started")
        return self._desk

    def store_errors(self) -> AbstractContextManager[None]:
        """``with service.store_errors():`` turns a store that is down into a 503 (console)."""
        return self._store_errors()

    def review_queue_length(self) -> int:
        with self._store_errors():
            return self._queue.pending_count()
