// xdr-responder: everything one tenant's deployment needs, at subscription scope.
// A resource group, then one module per concern (infra/app/*.bicep). docs/deploy.md explains each
// parameter, the permissions it grants and the commands (azd up, az deployment sub create).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd environment name); it seeds the unique names of all resources.')
param environmentName string

@minLength(1)
@description('Azure region of every resource (must offer the Flex Consumption plan).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group to create or reuse. Empty: rg-<environmentName>.')
param resourceGroupName string = ''

// --- detection backend -------------------------------------------------------------------------

@description('Where detection queries run: defender (Graph advanced hunting) or sentinel (Log Analytics).')
@allowed([
  'defender'
  'sentinel'
])
param queryBackend string = 'defender'

@description('Resource id of the Sentinel Log Analytics workspace (needed when queryBackend is sentinel). The identity gets Log Analytics Reader on it.')
param sentinelWorkspaceResourceId string = ''

// --- remediation features: each one grants its permissions only when enabled --------------------

@description('Email actions (move_to_junk, move_to_inbox, soft_delete). On by default: the default rule consumer-sender-to-shared-mailboxes moves mail to Junk in auto mode.')
param emailRemediation bool = true

@description('How email is moved: defender (analyzedEmails/remediate, needs Defender for Office 365 P2) or mailbox (Graph Mail.ReadWrite in the recipient mailbox).')
@allowed([
  'defender'
  'mailbox'
])
param emailStrategy string = 'defender'

@description('Mailbox strategy and push path. exchangeRbac: Mail.ReadWrite (mailbox strategy) and Mail.Read (push path) are granted by Exchange Online RBAC for Applications on the protected mailboxes only (infra/scripts/Set-MailboxScope.ps1), never in Entra. tenantWide: granted in Entra, every mailbox in the tenant (not recommended).')
@allowed([
  'exchangeRbac'
  'tenantWide'
])
param mailboxAccessScope string = 'exchangeRbac'

@description('revoke_sessions: grants User.RevokeSessions.All. On by default: the default rules admin-logon-failures-then-success, password-spray-then-success and outbound-external-burst propose it in approval mode, and an approval runs it.')
param enableRevokeSessions bool = true

@description('disable_user: grants User.EnableDisableAccount.All and User.Read.All.')
param enableDisableUser bool = false

@description('confirm_compromised: grants IdentityRiskyUser.ReadWrite.All and .Read.All (needs Entra ID P2).')
param enableConfirmCompromised bool = false

@description('Exchange connector actions. manual: nothing granted, on-call runs the command the card shows. approval: Exchange.ManageAsApp granted, an approval in the app runs it. auto: as approval, and connector rules in auto mode run without waiting. The app gets the same value as RESPONDER_CONNECTOR_ACTIONS.')
@allowed([
  'manual'
  'approval'
  'auto'
])
param connectorActions string = 'manual'

@description('Global dry-run switch: record what would be done and do nothing.')
param dryRun bool = false

@description('Most on-demand re-scans (POST /api/scan) accepted per hour.')
@minValue(1)
param scanRatePerHour int = 12

@description('When submitted Defender email remediations are confirmed from EmailEvents (6-field NCRONTAB, UTC).')
param verifySchedule string = '30 */5 * * * *'

@description('How long a held request waits for a person before it expires (ISO-8601 duration, PT1H to P30D).')
param heldExpiry string = 'P7D'

@description('Approval page: client id of the Entra app registration for sign-in (Easy Auth). Empty: page off (docs/approval.md).')
param approvalPageClientId string = ''
@description('Approval page: object id of the on-call Entra group allowed to approve and reject.')
param onCallGroupId string = ''

// --- push path (docs/push.md) ------------------------------------------------------------------

@description('The push path: Graph change notifications on the protected mailboxes act within a minute or two of delivery, beside the scheduled rules. Off by default: the per-tenant off switch (RESPONDER_PUSH). Needs Mail.Read on the protected mailboxes (Set-MailboxScope.ps1 -Role \'Application Mail.Read\', or the mailbox strategy\'s Application Mail.ReadWrite).')
param pushEnabled bool = false

// The subscriptions' clientState, written to Key Vault as push-client-state when the push path is on.
// newGuid() is the one default a secure parameter may have (Bicep linter secure-parameter-default:
// https://learn.microsoft.com/azure/azure-resource-manager/bicep/linter-rule-secure-parameter-default):
// two GUIDs without dashes, 64 characters (Graph allows clientState up to 255). A deployment that writes
// it rotates it: the subscriptions timer then recreates the subscriptions (docs/push.md). Not azd's
// $(secretOrRandomPassword): it makes 15 characters (5 lower, 5 upper, 5 digits; Azure/azure-dev
// cli/azd/pkg/cmdsubst/secretOrRandomPassword.go), under the 32 the app requires.
@secure()
@minLength(32)
@maxLength(255)
@description('clientState Graph echoes in every notification (a shared secret; Key Vault secret push-client-state). Default: generated at each deployment.')
param pushClientState string = '${replace(newGuid(), '-', '')}${replace(newGuid(), '-', '')}'

@description('The push-client-state secret is already in Key Vault (written by an earlier deployment or by hand): keep it instead of writing a new value, so a deployment does not rotate it.')
param pushClientStateInKeyVault bool = false

// --- Teams -------------------------------------------------------------------------------------

@secure()
@description('Teams Workflows webhook URL ("When a Teams webhook request is received"). Stored as a Key Vault secret. Empty: no secret is written.')
param teamsWebhookUrl string = ''

@description('The webhook secret was put in Key Vault by hand (az keyvault secret set): reference it even though teamsWebhookUrl is empty.')
param teamsWebhookInKeyVault bool = false

// --- hosting -----------------------------------------------------------------------------------

@description('Flex Consumption always-ready instances, e.g. [{"name": "function:worker", "instanceCount": 1}]. Empty: scale from zero.')
param alwaysReady array = []

@description('Flex Consumption: most instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex Consumption: memory of each instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Operator-supplied app settings, e.g. {"RESPONDER_PARAMS": "{...}", "RESPONDER_SCHEDULE_<SLUG>": "0 */2 * * * *"}. Settings the Bicep sets always win. Use this rather than editing settings in the portal: every deployment replaces the whole set.')
param operatorAppSettings object = {}

@description('E-mail addresses the monitoring alerts go to (docs/monitoring.md). Empty: the alerts only show in the portal, unless alertTeamsWorkflowUrl is set.')
param alertEmails array = []

@secure()
@description('Teams Workflows URL the monitoring alerts post to (a flow that reads the Azure Monitor common alert schema; not the card webhook). Empty: e-mail only.')
param alertTeamsWorkflowUrl string = ''

@description('Log Analytics retention in days.')
@minValue(30)
param logRetentionDays int = 30

// operatorAppSettings may not name a setting the Flex Consumption plan does not support
// (FUNCTIONS_WORKER_RUNTIME, WEBSITE_RUN_FROM_PACKAGE, ...) or one infra/app/function.bicep sets (it would
// silently win). azd's preprovision hook (infra/scripts/check_parameters.py) refuses these before
// anything is deployed; this fail() is the same rule for `az deployment`, where ARM stops the
// deployment when it evaluates it (Bicep fail(), Azure/bicep#15958).
var reservedAppSettings = loadJsonContent('app-settings-reserved.json')
var reservedAppSettingNames = map(concat(reservedAppSettings.flexConsumptionUnsupported.names, reservedAppSettings.setByDeployment), n => toUpper(n))
var refusedOperatorSettings = filter(objectKeys(operatorAppSettings), name => contains(reservedAppSettingNames, toUpper(name)) || startsWith(toUpper(name), toUpper(reservedAppSettings.storagePrefix)))
var checkedOperatorAppSettings = empty(refusedOperatorSettings) ? operatorAppSettings : fail('operatorAppSettings: ${join(refusedOperatorSettings, ', ')}: not allowed (unsupported by the Flex Consumption plan, or set by the deployment itself); see docs/deploy.md, App settings')

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'xdr-responder'
}
var functionAppName = 'func-xdr-${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'
var teamsWebhookSecretName = 'teams-webhook-url'
var pushClientStateSecretName = 'push-client-state'

// Names the code defaults to (APP_SETTINGS in core/settings.py); the app is told them anyway.
var requestsQueueName = 'remediation-requests'
var ledgerTableName = 'ledger'
var pushQueueName = 'push-notifications'
var pushTableName = 'pushstate'

// --- application permissions: infra/permissions.json maps each feature to its roles -----------
var permissions = loadJsonContent('permissions.json')
var sentinelEnabled = queryBackend == 'sentinel'
var grantDefenderEmail = emailRemediation && emailStrategy == 'defender'
var grantMailboxTenantWide = emailRemediation && emailStrategy == 'mailbox' && mailboxAccessScope == 'tenantWide'
var grantExchangeConnectors = connectorActions != 'manual'
// The push path reads messages (Mail.Read); tenant-wide only when asked, and not when Mail.ReadWrite,
// which includes reading, is granted tenant-wide already.
var grantPushTenantWide = pushEnabled && mailboxAccessScope == 'tenantWide' && !grantMailboxTenantWide
var graphAppRoles = flatten([
  permissions.features.hunting.roles
  grantDefenderEmail ? permissions.features.defenderEmail.roles : []
  grantMailboxTenantWide ? permissions.features.mailboxTenantWide.roles : []
  grantPushTenantWide ? permissions.features.pushTenantWide.roles : []
  enableRevokeSessions ? permissions.features.revokeSessions.roles : []
  enableDisableUser ? permissions.features.disableUser.roles : []
  enableConfirmCompromised ? permissions.features.confirmCompromised.roles : []
])
var exchangeAppRoles = grantExchangeConnectors ? permissions.features.exchangeConnectors.roles : []

var sentinelParts = split(sentinelWorkspaceResourceId, '/')
var sentinelSubscriptionId = sentinelEnabled ? sentinelParts[2] : subscription().subscriptionId
var sentinelResourceGroup = sentinelEnabled ? sentinelParts[4] : 'unused'
var sentinelWorkspaceName = sentinelEnabled ? last(sentinelParts) : 'unused'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-xdr-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stxdr${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    requestsQueueName: requestsQueueName
    ledgerTableName: ledgerTableName
    pushQueueName: pushQueueName
    pushTableName: pushTableName
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-xdr-${resourceToken}'
    applicationInsightsName: 'appi-xdr-${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionDays
    alertEmails: alertEmails
    alertTeamsWorkflowUrl: alertTeamsWorkflowUrl
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-xdr-${resourceToken}'
    location: location
    tags: tags
    teamsWebhookSecretName: teamsWebhookSecretName
    teamsWebhookUrl: teamsWebhookUrl
    pushClientStateSecretName: pushClientStateSecretName
    pushClientState: pushClientState
    writePushClientState: pushEnabled && !pushClientStateInKeyVault
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
  }
}

module sentinel 'app/sentinel.bicep' = if (sentinelEnabled) {
  name: 'sentinel-reader'
  scope: resourceGroup(sentinelSubscriptionId, sentinelResourceGroup)
  params: {
    workspaceName: sentinelWorkspaceName
    principalId: identity.outputs.principalId
  }
}

// A brand-new identity's service principal takes a while to replicate through Entra ID; granting app
// roles to it at once fails with "Not a valid reference update"
// (https://github.com/microsoftgraph/msgraph-bicep-types/issues/193). So the grants wait for the
// resources that take minutes (Key Vault, the role assignments, the function app); docs/deploy.md
// says to run `azd provision` again should it still happen.
module graphPermissions 'app/graph-permissions.bicep' = {
  name: 'graph-permissions'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    graphAppRoles: graphAppRoles
    exchangeAppRoles: exchangeAppRoles
  }
  dependsOn: [
    keyVault
    rbac
    functionApp
  ]
}

module functionApp 'app/function.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-xdr-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    teamsWebhookSecretName: teamsWebhookSecretName
    teamsNotifications: !empty(teamsWebhookUrl) || teamsWebhookInKeyVault
    queryBackend: queryBackend
    sentinelWorkspaceId: sentinelEnabled ? sentinel.outputs.workspaceCustomerId : ''
    requestsQueueName: requestsQueueName
    ledgerTableName: ledgerTableName
    emailStrategy: emailStrategy
    connectorActions: connectorActions
    dryRun: dryRun
    scanRatePerHour: scanRatePerHour
    verifySchedule: verifySchedule
    heldExpiry: heldExpiry
    approvalPageClientId: approvalPageClientId
    onCallGroupId: onCallGroupId
    pushEnabled: pushEnabled
    pushQueueName: pushQueueName
    pushTableName: pushTableName
    pushClientStateSecretName: pushClientStateSecretName
    alwaysReady: alwaysReady
    extraAppSettings: checkedOperatorAppSettings
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
  // The identity must hold its storage and Key Vault roles before the host starts.
  dependsOn: [
    rbac
  ]
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = functionApp.outputs.name
output SERVICE_API_NAME string = functionApp.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output RESPONDER_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output RESPONDER_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output RESPONDER_GRAPH_APP_ROLES array = graphAppRoles
output RESPONDER_EXCHANGE_APP_ROLES array = exchangeAppRoles
