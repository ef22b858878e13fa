"""The deployment guide and the mailbox-scope script say what an admin needs, in runnable form."""

from __future__ import annotations

import re

from tests.infra import bicepmodel as bm

DOC = (bm.ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
SCRIPT = (bm.INFRA / "scripts" / "Set-MailboxScope.ps1").read_text(encoding="utf-8")


def test_guide_has_the_commands_and_prerequisites() -> None:
    for needle in (
        "azd up",
        "az deployment sub create",
        "--template-file infra/main.bicep",
        "Defender for Office 365 Plan 2",
        "Entra ID P2",
        "Privileged Role Administrator",
        "User Access Administrator",
        "When a Teams webhook request is received",
        "az keyvault secret set",
        "Set-MailboxScope.ps1",
        "tenant.yaml",
    ):
        assert needle in DOC, f"docs/deploy.md lacks {needle!r}"


def test_guide_documents_every_main_parameter() -> None:
    main = bm.load("infra/main.bicep")
    missing = [name for name in main.params if f"`{name}`" not in DOC]
    assert not missing, f"docs/deploy.md does not describe parameters {missing}"


def test_guide_names_the_azd_variable_of_each_parameter_in_the_parameters_file() -> None:
    values = (bm.INFRA / "main.parameters.json").read_text(encoding="utf-8")
    for var in re.findall(r"\$\{([A-Z_]+)", values):
        assert f"`{var}`" in DOC, f"docs/deploy.md does not name azd variable {var}"


def test_mailbox_script_scopes_and_verifies() -> None:
    assert "SupportsShouldProcess" in SCRIPT
    for cmdlet in (
        "New-ServicePrincipal",
        "New-ManagementScope",
        "-RecipientRestrictionFilter",
        "New-ManagementRoleAssignment",
        "-CustomResourceScope",
        "Test-ServicePrincipalAuthorization",
    ):
        assert cmdlet in SCRIPT, cmdlet
    # The mailbox strategy's role by default; the push path alone needs only the read role.
    assert "[ValidateSet('Application Mail.ReadWrite', 'Application Mail.Read')]" in SCRIPT
    assert "[string] $Role = 'Application Mail.ReadWrite'" in SCRIPT
    assert "-Role $Role" in SCRIPT and "-CustomResourceScope $ScopeName" in SCRIPT
    # Either Entra grant would defeat the scope.
    assert "foreach ($permission in 'Mail.ReadWrite', 'Mail.Read')" in SCRIPT
    assert "$permission is ALSO granted in Entra ID" in SCRIPT
    assert "exit 1" in SCRIPT, "a failed verification must fail the script"


def test_mailbox_script_brackets_balance() -> None:
    # No PowerShell here: a cheap structural check that catches a lost brace or parenthesis.
    code = re.sub(r"<#.*?#>", "", SCRIPT, flags=re.S)
    code = re.sub(r"'[^'\n]*'", "''", code)
    code = re.sub(r'"[^"\n]*"', '""', code)
    code = re.sub(r"(?m)#.*$", "", code)
    for open_, close in ("{}", "()", "[]"):
        assert code.count(open_) == code.count(close), f"unbalanced {open_}{close} in Set-MailboxScope.ps1"


def test_guide_states_the_service_facts_a_deployment_depends_on() -> None:
    # issue 10: each fact with the Microsoft page it comes from
    facts = {
        "Automated Investigation must be on": "remediate-malicious-email-delivered-office-365",
        "Defender for Cloud Apps' Microsoft 365 app\n  connector":
            "advanced-hunting-identitylogonevents-table",
        "up to about 24 hours": "overview-managed-identity",
        "the reference string is\nused instead": "app-service-key-vault-references",
    }
    for fact, source in facts.items():
        assert fact in DOC, fact
        assert source in DOC[DOC.index(fact) - 600:DOC.index(fact) + 900], (fact, source)
    assert "az functionapp restart" in DOC[DOC.index("A newly granted Graph role"):]
