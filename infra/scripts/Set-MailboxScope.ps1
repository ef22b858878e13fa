<#
.SYNOPSIS
    Scope xdr-responder's mailbox access (the mailbox email strategy, the push path) to the protected
    mailboxes with Exchange Online RBAC for Applications.

.DESCRIPTION
    The mailbox strategy (RESPONDER_EMAIL_STRATEGY=mailbox) moves messages with Microsoft Graph
    (Mail.ReadWrite). Granted in Entra ID, Mail.ReadWrite reaches every mailbox of the tenant. This
    script grants it through Exchange Online instead, limited to a management scope:

      1. registers the app's managed identity as an Exchange service principal (New-ServicePrincipal);
      2. creates or updates a management scope whose recipient filter matches the protected mailboxes
         (New-ManagementScope / Set-ManagementScope);
      3. assigns the role -Role on that scope (New-ManagementRoleAssignment): "Application Mail.ReadWrite"
         for the mailbox strategy (it also covers the push path), or "Application Mail.Read" for the push
         path alone (the Defender strategy moves mail without mailbox access);
      4. verifies with Test-ServicePrincipalAuthorization that every protected mailbox is in scope and
         that a sample mailbox outside the list is not;
      5. fails if Mail.ReadWrite or Mail.Read is also granted in Entra ID (that grant would defeat the
         scope: remove it, i.e. deploy with mailboxAccessScope=exchangeRbac, the default).

    Source: https://learn.microsoft.com/exchange/permissions-exo/application-rbac

    Idempotent: run it again after changing the list; it updates the scope's filter.
    Needs the ExchangeOnlineManagement module (v3) and an Exchange administrator (Organization
    Management) session. Exchange caches permissions: allow up to two hours before the app sees a change.

.PARAMETER IdentityClientId
    Client (application) id of the function app's user-assigned managed identity
    (azd output RESPONDER_IDENTITY_CLIENT_ID, app setting AZURE_CLIENT_ID).

.PARAMETER IdentityObjectId
    Object id of the identity's service principal (Enterprise application object id;
    azd output RESPONDER_IDENTITY_PRINCIPAL_ID).

.PARAMETER Mailboxes
    SMTP addresses of the protected mailboxes (the rules' protected_recipients). Either this or
    -RecipientFilter.

.PARAMETER RecipientFilter
    An OPATH recipient filter instead of a list, for example "CustomAttribute10 -eq 'xdr-protected'".

.PARAMETER Role
    'Application Mail.ReadWrite' (default; emailStrategy=mailbox, with or without pushEnabled) or
    'Application Mail.Read' (pushEnabled=true with emailStrategy=defender: the push path only reads).

.PARAMETER OutOfScopeSample
    A mailbox that must NOT be reachable; the verification fails if it is in scope.

.EXAMPLE
    ./Set-MailboxScope.ps1 -IdentityClientId $clientId -IdentityObjectId $principalId `
        -Mailboxes support@contoso.com, sales@contoso.com, info@contoso.com -OutOfScopeSample ceo@contoso.com

.EXAMPLE
    # The push path with the Defender strategy: read access only.
    ./Set-MailboxScope.ps1 -IdentityClientId $clientId -IdentityObjectId $principalId -Role 'Application Mail.Read' `
        -Mailboxes support@contoso.com, sales@contoso.com, info@contoso.com -OutOfScopeSample ceo@contoso.com
#>
[CmdletBinding(SupportsShouldProcess = $true, DefaultParameterSetName = 'List')]
param(
    [Parameter(Mandatory = $true)]
    [ValidatePattern('^[0-9a-fA-F-]{36}$')]
    [string] $IdentityClientId,

    [Parameter(Mandatory = $true)]
    [ValidatePattern('^[0-9a-fA-F-]{36}$')]
    [string] $IdentityObjectId,

    [Parameter(Mandatory = $true, ParameterSetName = 'List')]
    [ValidateNotNullOrEmpty()]
    [string[]] $Mailboxes,

    [Parameter(Mandatory = $true, ParameterSetName = 'Filter')]
    [ValidateNotNullOrEmpty()]
    [string] $RecipientFilter,

    [ValidateSet('Application Mail.ReadWrite', 'Application Mail.Read')]
    [string] $Role = 'Application Mail.ReadWrite',

    [string] $OutOfScopeSample,

    [string] $DisplayName = 'xdr-responder',

    [string] $ScopeName = 'xdr-responder protected mailboxes',

    [string] $AssignmentName = ''
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
# One assignment per role, so the push path's read role and the mailbox strategy's role can coexist.
if (-not $AssignmentName) { $AssignmentName = "xdr-responder $Role" }

if (-not (Get-Command Get-ConnectionInformation -ErrorAction SilentlyContinue)) {
    throw 'Install the ExchangeOnlineManagement module (v3): Install-Module ExchangeOnlineManagement'
}
if (-not (Get-ConnectionInformation | Where-Object { $_.State -eq 'Connected' })) {
    Connect-ExchangeOnline -ShowBanner:$false
}

# The filter: one clause per address, quotes doubled so an address cannot change the filter.
if ($PSCmdlet.ParameterSetName -eq 'List') {
    $clauses = foreach ($address in $Mailboxes) {
        $trimmed = $address.Trim()
        if ($trimmed -notmatch '^[^@\s]+@[^@\s]+$') { throw "not an SMTP address: '$address'" }
        $escaped = $trimmed.Replace("'", "''")
        "PrimarySmtpAddress -eq '$escaped'"
    }
    $RecipientFilter = '(' + ($clauses -join ' -or ') + ')'
}
Write-Host "Recipient filter: $RecipientFilter"

# 1. Service principal (the managed identity, as Exchange knows it).
$sp = Get-ServicePrincipal -Identity $IdentityObjectId -ErrorAction SilentlyContinue
if (-not $sp) {
    if ($PSCmdlet.ShouldProcess($IdentityObjectId, 'New-ServicePrincipal')) {
        $sp = New-ServicePrincipal -AppId $IdentityClientId -ObjectId $IdentityObjectId -DisplayName $DisplayName
    }
} elseif ($sp.AppId -ne $IdentityClientId) {
    throw "Exchange service principal $IdentityObjectId has AppId $($sp.AppId), not $IdentityClientId"
}

# 2. Management scope over the protected mailboxes.
$scope = Get-ManagementScope -Identity $ScopeName -ErrorAction SilentlyContinue
if (-not $scope) {
    if ($PSCmdlet.ShouldProcess($ScopeName, 'New-ManagementScope')) {
        New-ManagementScope -Name $ScopeName -RecipientRestrictionFilter $RecipientFilter | Out-Null
    }
} elseif ($scope.RecipientFilter -ne $RecipientFilter) {
    if ($PSCmdlet.ShouldProcess($ScopeName, 'Set-ManagementScope')) {
        Set-ManagementScope -Identity $ScopeName -RecipientRestrictionFilter $RecipientFilter
    }
}

# 3. The application role, on that scope only.
$assignment = Get-ManagementRoleAssignment -Identity $AssignmentName -ErrorAction SilentlyContinue
if ($assignment -and ($assignment.CustomResourceScope -ne $ScopeName -or $assignment.Role -ne $Role)) {
    throw "Role assignment '$AssignmentName' exists with another role or scope; remove it first."
}
if (-not $assignment) {
    if ($PSCmdlet.ShouldProcess($AssignmentName, "New-ManagementRoleAssignment $Role")) {
        New-ManagementRoleAssignment -Name $AssignmentName -App $IdentityObjectId -Role $Role `
            -CustomResourceScope $ScopeName | Out-Null
    }
}

# 4. Verification.
$failures = @()
$expected = if ($PSCmdlet.ParameterSetName -eq 'List') { $Mailboxes } else {
    (Get-Recipient -RecipientPreviewFilter $RecipientFilter -ResultSize 1000).PrimarySmtpAddress
}
foreach ($mailbox in $expected) {
    $result = Test-ServicePrincipalAuthorization -Identity $IdentityObjectId -Resource $mailbox |
        Where-Object { $_.RoleName -eq $Role }
    if (-not $result -or -not $result.InScope) {
        $failures += "$mailbox is not in scope of $Role"
    } else {
        Write-Host "in scope:     $mailbox"
    }
}
if ($OutOfScopeSample) {
    $result = Test-ServicePrincipalAuthorization -Identity $IdentityObjectId -Resource $OutOfScopeSample |
        Where-Object { $_.RoleName -eq $Role }
    if ($result -and $result.InScope) {
        $failures += "$OutOfScopeSample is in scope but must not be"
    } else {
        Write-Host "out of scope: $OutOfScopeSample"
    }
}

# 5. Tenant-wide Mail.ReadWrite in Entra ID would bypass the scope.
if (Get-Command az -ErrorAction SilentlyContinue) {
    $graphSp = az rest --method get --url "https://graph.microsoft.com/v1.0/servicePrincipals(appId='00000003-0000-0000-c000-000000000000')?`$select=id,appRoles" | ConvertFrom-Json
    $grants = az rest --method get --url "https://graph.microsoft.com/v1.0/servicePrincipals/$IdentityObjectId/appRoleAssignments" | ConvertFrom-Json
    foreach ($permission in 'Mail.ReadWrite', 'Mail.Read') {
        $mailRole = $graphSp.appRoles | Where-Object { $_.value -eq $permission }
        $tenantWide = $grants.value | Where-Object { $_.resourceId -eq $graphSp.id -and $_.appRoleId -eq $mailRole.id }
        if ($tenantWide) {
            # A deployment never deletes a grant it no longer declares: remove it by hand.
            $failures += ("$permission is ALSO granted in Entra ID, so every mailbox is reachable. Remove it: " +
                "az rest --method delete --url https://graph.microsoft.com/v1.0/servicePrincipals/$IdentityObjectId/appRoleAssignments/$($tenantWide.id) " +
                'and keep mailboxAccessScope=exchangeRbac (the default) in the deployment.')
        }
    }
} else {
    Write-Warning ('Azure CLI not found: check by hand that the identity has no Entra ID grant of Mail.ReadWrite or Mail.Read ' +
        '(docs/deploy.md, "Mailbox strategy"); such a grant defeats this scope.')
}

if ($failures) {
    $failures | ForEach-Object { Write-Error $_ -ErrorAction Continue }
    Write-Host 'Exchange may take up to two hours to apply a new assignment; re-run to verify again.'
    exit 1
}
Write-Host "OK: $Role is limited to scope '$ScopeName'."
