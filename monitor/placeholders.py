"""Placeholders in check options, filled per customer: ``{customer.tenant_domain}`` …

``{customer.id}``, ``{customer.name}``, ``{customer.tenant_domain}``,
``{customer.tenant_name}`` (first label of the tenant domain),
``{customer.tier}``, ``{customer.NAME}`` for any of the customer's or the
subscription's ``vars``, and ``{service.id}``. Other braces (a regular
expression's ``{3}``) are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretStr

_PLACEHOLDER = re.compile(r"\{(customer|service)\.([A-Za-z_][A-Za-z0-9_]*)\}")


def values_for(
    customer_id: str,
    name: str,
    tenant_domain: str,
    tier: str,
    customer_vars: Mapping[str, str],
    service_id: str,
    subscription_vars: Mapping[str, str],
) -> dict[str, dict[str, str]]:
    values = {
        "id": customer_id,
        "name": name,
        "tenant_domain": tenant_domain,
        "tenant_name": tenant_domain.split(".", 1)[0],
        "tier": tier,
    }
    values.update(customer_vars)
    values.update(subscription_vars)
    return {"customer": values, "service": {"id": service_id}}


def fill(value: Any, values: dict[str, dict[str, str]], missing: set[str]) -> Any:
    """Substitute placeholders in every string of an options structure."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            scope, name = match.groups()
            found = values[scope].get(name)
            if found is None:
                missing.add(match.group(0))
                return match.group(0)
            return found

        return _PLACEHOLDER.sub(replace, value) if "{" in value else value
    if isinstance(value, SecretStr):
        return fill(value.get_secret_value(), values, missing)
    if isinstance(value, dict):
        return {k: fill(v, values, missing) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [fill(v, values, missing) for v in value]
    if isinstance(value, BaseModel):
        return fill(value.model_dump(), values, missing)
    return value
