"""Amazon Route 53 through boto3: a ChangeBatch DELETE(old) + CREATE(new) is the
compare-and-set, since Route 53 applies a batch all-or-nothing and rejects a
DELETE that does not match the current record exactly.

Every HTTP request (retries included) first takes a token from a client-side
bucket, so a burst of failovers across many services stays under the
account's API rate; botocore's own retries are off so that tenacity is the
only one retrying and every attempt is paced and counted once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from failover.dns.errors import DnsRejected, DnsUnavailable, RecordConflict, VisibilityTimeout
from failover.dns.provider import Change
from failover.dns.ratelimit import TokenBucket
from failover.dns.records import RecordKey, RecordSet, Routing, absolute_name
from failover.dns.retrying import transient_retries
from failover.dns.wire import canonical
from failover.errors import UserError

if TYPE_CHECKING:
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_route53.literals import RRTypeType
    from mypy_boto3_route53.type_defs import (
        ChangeTypeDef,
        ListResourceRecordSetsRequestTypeDef,
        ResourceRecordSetOutputTypeDef,
        ResourceRecordSetTypeDef,
    )

log = logging.getLogger(__name__)
T = TypeVar("T")

# Route 53 asks callers to back off and retry these; neither means the request was applied.
_RETRYABLE_CODES = frozenset({"Throttling", "PriorRequestNotComplete", "ServiceUnavailable"})
_CREDENTIAL_CODES = frozenset({"AccessDenied", "InvalidClientTokenId", "SignatureDoesNotMatch",
                               "UnrecognizedClientException", "ExpiredToken"})


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _retry_before_sending(error: BaseException) -> bool:
    """Errors after which the change was certainly not applied: safe for writes."""
    if isinstance(error, ClientError):
        return _code(error) in _RETRYABLE_CODES
    return isinstance(error, (EndpointConnectionError, ConnectTimeoutError))


def _retry_read(error: BaseException) -> bool:
    """Reads are idempotent: also retry a lost answer and any server error."""
    if isinstance(error, ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        return _code(error) in _RETRYABLE_CODES or status >= 500
    return isinstance(error, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
                              ConnectionClosedError))


class Route53Provider:
    """Records of one Route 53 hosted zone, simple, weighted or failover."""

    def __init__(self, zone: str, hosted_zone_id: str, *, endpoint_url: str | None = None,
                 region_name: str = "us-east-1", requests_per_second: float = 5.0,
                 burst: float = 1.0, timeout: float = 5.0, poll_interval: float = 1.0,
                 verify_before_change: bool = False, attempts: int = 8,
                 session: boto3.Session | None = None) -> None:
        self._zone = absolute_name(zone, zone, field_name="dns.zone")
        self.hosted_zone_id = hosted_zone_id.removeprefix("/hostedzone/")
        if not self.hosted_zone_id:
            raise UserError("dns.route53.hosted_zone_id: empty; copy the zone's id (Z...) from "
                            "`aws route53 list-hosted-zones`")
        self.timeout = timeout
        self.poll_interval = poll_interval
        # Real Route 53 enforces exact-match DELETE itself. Emulators may not:
        # moto 5.2 accepts a DELETE of values the record once had, and refuses
        # DELETE(old)+CREATE(new) when that CREATE ever happened before (a
        # writer moving back to a region). For them the current record is
        # checked first and then replaced with one UPSERT: that check is not
        # atomic, it narrows the window of a race, it does not close it.
        self.verify_before_change = verify_before_change
        self._attempts = attempts
        self.bucket = TokenBucket(requests_per_second, burst)
        config = Config(connect_timeout=timeout, read_timeout=timeout,
                        retries={"total_max_attempts": 1, "mode": "standard"})
        self.client: Route53Client = (session or boto3.Session()).client(
            "route53", endpoint_url=endpoint_url, region_name=region_name, config=config)
        self.client.meta.events.register("before-send.route53", self._pace)

    def __repr__(self) -> str:
        return f"Route53Provider(zone={self._zone!r}, hosted_zone_id={self.hosted_zone_id!r})"

    @property
    def zone(self) -> str:
        return self._zone

    def _pace(self, **_: Any) -> None:
        self.bucket.acquire()

    def _call(self, what: str, call: Callable[[], T], worth_retrying: Callable[[BaseException],
                                                                                bool]) -> T:
        retrying = transient_retries(what, worth_retrying=worth_retrying,
                                     attempts=self._attempts, within=self.timeout * 6,
                                     first_wait=0.1, max_wait=5.0)
        try:
            return retrying(call)
        except ClientError as exc:
            code = _code(exc)
            message = exc.response.get("Error", {}).get("Message", "")
            if code == "NoSuchHostedZone":
                raise UserError(f"dns.route53.hosted_zone_id: Route 53 has no hosted zone "
                                f"{self.hosted_zone_id!r}; fix the id") from None
            if code in _CREDENTIAL_CODES:
                raise DnsRejected(f"Route 53 refused {what} ({code}): check the AWS credentials "
                                  "and that they allow route53:ChangeResourceRecordSets, "
                                  "ListResourceRecordSets and GetChange") from None
            if code == "InvalidChangeBatch":
                raise
            if code in _RETRYABLE_CODES:
                raise DnsUnavailable(f"Route 53 still answers {code} to {what} after "
                                     f"{self._attempts} attempts: {message}") from None
            raise DnsRejected(f"Route 53 refused {what}: {code}: {message}") from None
        except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
                ConnectionClosedError) as exc:
            raise DnsUnavailable(f"Route 53 did not answer {what}: {exc}") from None

    def _checked(self, key: RecordKey) -> RecordKey:
        return replace(key, name=absolute_name(key.name, self._zone, field_name=str(key)),
                       rtype=key.rtype.upper())

    # ------------------------------------------------------------ reads

    def _from_api(self, item: ResourceRecordSetOutputTypeDef) -> RecordSet:
        key = RecordKey(item["Name"].lower(), item["Type"], item.get("SetIdentifier"))
        if "AliasTarget" in item:
            raise DnsRejected(f"{key} is an alias record; failover manages records with values "
                              "(use a record with the regions' addresses)")
        values = frozenset(entry["Value"] for entry in item.get("ResourceRecords", []))
        routing = Routing(weight=item.get("Weight"), failover=item.get("Failover"),
                          health_check_id=item.get("HealthCheckId"))
        return RecordSet(key, int(item.get("TTL", 0)),
                         canonical(key.rtype, values, where=str(key)), routing)

    def record_sets(self, name: str, rtype: str) -> list[RecordSet]:
        """Every record set with this name and type: one simple, or the weighted/failover ones."""
        name, rtype = absolute_name(name, self._zone, field_name=name), rtype.upper()
        found: list[RecordSet] = []
        request: ListResourceRecordSetsRequestTypeDef = {
            "HostedZoneId": self.hosted_zone_id, "MaxItems": "100",
            "StartRecordName": name, "StartRecordType": cast("RRTypeType", rtype)}
        while True:
            page = self._call(f"list {name} {rtype}",
                              partial(self.client.list_resource_record_sets, **request),
                              _retry_read)
            for item in page["ResourceRecordSets"]:
                if item["Name"].lower() != name or item["Type"] != rtype:
                    return found
                found.append(self._from_api(item))
            if not page["IsTruncated"]:
                return found
            if (page["NextRecordName"], page.get("NextRecordIdentifier")) == (
                    request["StartRecordName"], request.get("StartRecordIdentifier")):
                raise DnsRejected(f"listing {name} {rtype} does not advance past "
                                  f"{len(found)} record sets (an API without "
                                  "StartRecordIdentifier?)")
            request["StartRecordName"] = page["NextRecordName"]
            request["StartRecordType"] = page["NextRecordType"]
            request.pop("StartRecordIdentifier", None)
            if "NextRecordIdentifier" in page:
                request["StartRecordIdentifier"] = page["NextRecordIdentifier"]

    def read(self, key: RecordKey) -> RecordSet | None:
        key = self._checked(key)
        for record in self.record_sets(key.name, key.rtype):
            if record.key.set_identifier == key.set_identifier:
                return record
        return None

    # ------------------------------------------------------------ writes

    @staticmethod
    def _to_api(record: RecordSet) -> ResourceRecordSetTypeDef:
        item: ResourceRecordSetTypeDef = {
            "Name": record.key.name, "Type": cast("RRTypeType", record.key.rtype),
            "TTL": record.ttl,
            "ResourceRecords": [{"Value": value} for value in sorted(record.values)],
        }
        if record.key.set_identifier is not None:
            item["SetIdentifier"] = record.key.set_identifier
        if record.routing.weight is not None:
            item["Weight"] = record.routing.weight
        if record.routing.failover is not None:
            item["Failover"] = record.routing.failover
        if record.routing.health_check_id is not None:
            item["HealthCheckId"] = record.routing.health_check_id
        return item

    def _batch(self, expected: RecordSet | None, desired: RecordSet) -> list[ChangeTypeDef]:
        if self.verify_before_change and desired.values:
            return [{"Action": "UPSERT", "ResourceRecordSet": self._to_api(desired)}]
        changes: list[ChangeTypeDef] = []
        if expected is not None:
            changes.append({"Action": "DELETE", "ResourceRecordSet": self._to_api(expected)})
        if desired.values:
            changes.append({"Action": "CREATE", "ResourceRecordSet": self._to_api(desired)})
        return changes

    def compare_and_set(self, expected: RecordSet | None, desired: RecordSet) -> Change:
        key = self._checked(desired.key)
        where = str(key)
        desired = replace(desired, key=key,
                          values=canonical(key.rtype, desired.values, where=where))
        if expected is not None:
            if self._checked(expected.key) != key:
                raise ValueError(f"compare_and_set of {key} given the old record of "
                                 f"{expected.key}")
            expected = replace(expected, key=key,
                               values=canonical(key.rtype, expected.values, where=where))
            if not expected.values:
                expected = None
        old_values = expected.values if expected else frozenset()
        done = Change(key, present=desired.values, absent=old_values - desired.values,
                      ticket="", pending=False)
        if expected == desired or (expected is None and not desired.values):
            return done
        if self.verify_before_change:
            current = self.read(key)
            if current == desired:
                return done
            if current != expected:
                raise RecordConflict(key, old_values or None, current)
        changes = self._batch(expected, desired)
        try:
            response = self._call(
                f"change {key}",
                lambda: self.client.change_resource_record_sets(
                    HostedZoneId=self.hosted_zone_id,
                    ChangeBatch={"Comment": "failover", "Changes": changes}),
                _retry_before_sending)
        except ClientError:  # InvalidChangeBatch: the record is not `expected`
            current = self.read(key)
            if current == desired or (current is None and not desired.values):
                return done
            raise RecordConflict(key, old_values or None, current) from None
        info = response["ChangeInfo"]
        log.info("dns: changed %s in Route 53 (%s, %s)", key, info["Id"], info["Status"])
        return replace(done, ticket=info["Id"], pending=info["Status"] != "INSYNC")

    def _edit_values(self, key: RecordKey, edit: Callable[[frozenset[str]], frozenset[str]],
                     ttl: int) -> Change:
        current = self.read(key)
        if current is None and key.set_identifier is not None:
            raise UserError(f"{key}: a weighted or failover record needs its routing: create "
                            "it with compare_and_set, then add values")
        before = current.values if current else frozenset()
        after = edit(before)
        desired = (replace(current, values=after) if current
                   else RecordSet(key, ttl, after))
        return self.compare_and_set(current, desired)

    def _edit_with_retries(self, key: RecordKey,
                           edit: Callable[[frozenset[str]], frozenset[str]], ttl: int) -> Change:
        # Another writer changing the same record set between our read and our
        # batch is a conflict worth re-reading for: we only touch one value.
        retrying = transient_retries(f"edit {key}", attempts=5, within=self.timeout * 6,
                                     worth_retrying=lambda e: isinstance(e, RecordConflict))
        return retrying(self._edit_values, self._checked(key), edit, ttl)

    def add_value(self, key: RecordKey, value: str, ttl: int) -> Change:
        [item] = canonical(key.rtype.upper(), frozenset({value}), where=str(key))
        change = self._edit_with_retries(key, lambda values: values | {item}, ttl)
        return replace(change, present=frozenset({item}), absent=frozenset())

    def remove_value(self, key: RecordKey, value: str) -> Change:
        [item] = canonical(key.rtype.upper(), frozenset({value}), where=str(key))
        change = self._edit_with_retries(key, lambda values: values - {item}, 0)
        return replace(change, present=frozenset(), absent=frozenset({item}))

    # ------------------------------------------------------------ visibility

    def wait_visible(self, change: Change, timeout: float) -> None:
        """Poll GetChange until INSYNC (every `poll_interval`, not the waiter's 30 s)."""
        if not change.pending:
            return
        deadline = time.monotonic() + timeout
        while True:
            info = self._call(f"get change {change.ticket}",
                              lambda: self.client.get_change(Id=change.ticket),
                              _retry_read)["ChangeInfo"]
            if info["Status"] == "INSYNC":
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VisibilityTimeout(
                    f"{change.key}: Route 53 accepted change {change.ticket} but it is still "
                    f"{info['Status']} after {timeout:g} s; it will apply, but clients may get "
                    "the old answer until it is INSYNC")
            time.sleep(min(self.poll_interval, remaining))
