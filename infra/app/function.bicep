// The function app: Flex Consumption (FC1), Python 3.11, running as the user-assigned identity.
// Every app setting the code reads (APP_SETTINGS in core/settings.py, source "bicep") is set here,
// under the same name; tests/infra checks that against the table.
param name string
param planName string
param location string = resourceGroup().location
param tags object = {}
param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string
param keyVaultName string
param teamsWebhookSecretName string
@description('Reference the Teams webhook secret (false: notifications off, the setting is empty).')
param teamsNotifications bool
param queryBackend string
@description('Log Analytics workspace id (GUID) for the sentinel backend; empty otherwise.')
param sentinelWorkspaceId string = ''
param requestsQueueName string
param ledgerTableName string
param emailStrategy string
@description('Exchange connector actions: manual | approval | auto (main.bicep connectorActions); the app reads it as RESPONDER_CONNECTOR_ACTIONS.')
param connectorActions string
param dryRun bool
param scanRatePerHour int
param alwaysReady array = []
@description('Operator-supplied settings (RESPONDER_PARAMS, RESPONDER_SCHEDULE_<SLUG>, ...). Settings set here win over them.')
param extraAppSettings object = {}
param maximumInstanceCount int = 40
param instanceMemoryMB int = 2048
param graphBaseUrl string = 'https://graph.microsoft.com/v1.0'
@description('Exchange Online admin API (connector actions).')
param exchangeBaseUrl string = 'https://outlook.office365.com/adminapi/beta'
@description('When submitted Defender email remediations are confirmed from EmailEvents (6-field NCRONTAB, UTC).')
param verifySchedule string = '30 */5 * * * *'
@description('How long a held request waits for a person before it expires (ISO-8601 duration).')
param heldExpiry string = 'P7D'
@description('Approval page sign-in: client id of the Entra app registration Easy Auth signs people in with. Empty: no App Service authentication, and the page refuses everyone (docs/approval.md).')
param approvalPageClientId string = ''
@description('Object id of the on-call Entra group (or the app role value on-call holds) allowed to use the approval page.')
param onCallGroupId string = ''
@description('Key Vault secret holding the approval page CSRF key (RESPONDER_PAGE_KEY); put in by hand, see docs/approval.md.')
param approvalPageKeySecretName string = 'approval-page-key'
@description('The push path (RESPONDER_PUSH, docs/push.md). false: off, the app makes no subscriptions.')
param pushEnabled bool = false
param pushQueueName string = 'push-notifications'
param pushTableName string = 'pushstate'
@description('Key Vault secret holding the subscriptions\' clientState (keyvault.bicep writes it when the push path is on).')
param pushClientStateSecretName string = 'push-client-state'

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Key Vault references resolve with the app's user-assigned identity.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageAccount.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: alwaysReady
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

var approvalPage = !empty(approvalPageClientId)
var approvalPageKeyReference = '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${approvalPageKeySecretName})'
var teamsWebhookReference = '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${teamsWebhookSecretName})'
var pushClientStateReference = '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${pushClientStateSecretName})'
// Graph posts change and lifecycle notifications here: the HTTP function push_notifications, route
// api/push/notifications (host.json routePrefix is ""), anonymous at the Functions level because Graph
// cannot send a function key; the clientState is the check (docs/push.md, Security).
var pushNotificationUrl = 'https://${site.properties.defaultHostName}/api/push/notifications'

// This resource replaces the whole set of settings on every deployment: settings added by hand in the
// portal are lost at the next one, so operator settings come in through extraAppSettings.
var settings = {
  // Functions host storage, identity-based (no connection string, no key).
  AzureWebJobsStorage__accountName: storageAccount.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storageAccount.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storageAccount.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storageAccount.properties.primaryEndpoints.table
  // Telemetry with Entra authentication (local auth is disabled on the component).
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // The app's own settings (core/settings.py APP_SETTINGS).
  AZURE_CLIENT_ID: identityClientId
  RESPONDER_TENANT_ID: tenant().tenantId
  RESPONDER_BACKEND: queryBackend
  RESPONDER_SENTINEL_WORKSPACE_ID: sentinelWorkspaceId
  RESPONDER_GRAPH_BASE_URL: graphBaseUrl
  RESPONDER_REQUESTS_QUEUE: requestsQueueName
  RESPONDER_LEDGER_TABLE: ledgerTableName
  RESPONDER_TEAMS_WEBHOOK_URL: teamsNotifications ? teamsWebhookReference : ''
  RESPONDER_DRY_RUN: dryRun ? 'true' : 'false'
  RESPONDER_EMAIL_STRATEGY: emailStrategy
  RESPONDER_EXCHANGE_BASE_URL: exchangeBaseUrl
  RESPONDER_CONNECTOR_ACTIONS: connectorActions
  RESPONDER_SCAN_RATE_PER_HOUR: string(scanRatePerHour)
  RESPONDER_VERIFY_SCHEDULE: verifySchedule
  RESPONDER_HELD_EXPIRY: heldExpiry
  // The approval page (app/signin.py) trusts Easy Auth's principal headers only when this says the
  // authsettingsV2 below is deployed (and the platform's WEBSITE_AUTH_ENABLED agrees).
  RESPONDER_EASY_AUTH: approvalPage ? 'entra' : ''
  RESPONDER_ONCALL_GROUP: approvalPage ? onCallGroupId : ''
  RESPONDER_PAGE_KEY: approvalPage ? approvalPageKeyReference : ''
  // The push path (docs/push.md); its queue and table exist either way (storage.bicep).
  RESPONDER_PUSH: pushEnabled ? 'on' : 'off'
  RESPONDER_PUSH_NOTIFICATION_URL: pushEnabled ? pushNotificationUrl : ''
  RESPONDER_PUSH_CLIENT_STATE: pushEnabled ? pushClientStateReference : ''
  RESPONDER_PUSH_QUEUE: pushQueueName
  RESPONDER_PUSH_TABLE: pushTableName
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union(extraAppSettings, settings)
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName

// App Service authentication (Easy Auth) in front of the approval page (/requests/..., /runs/...):
// sign-in with Entra ID required, only the on-call group let through. /api/* (function-key routes for
// automation, the anonymous /api/health, and /api/push/notifications, where Graph posts without any
// sign-in and the clientState is the check) is excluded so a SOAR, a probe or Graph still gets through;
// "/folder/*" is the wildcard form Microsoft gives for excludedPaths
// (MicrosoftDocs/azure-docs#86514; https://learn.microsoft.com/azure/app-service/configure-authentication-file-based).
// No client secret: sign-in uses the OpenID Connect implicit flow (ID tokens on the app registration;
// https://learn.microsoft.com/azure/app-service/configure-authentication-provider-aad).
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = if (approvalPage) {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      excludedPaths: [
        '/api/*'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: approvalPageClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            approvalPageClientId
            'api://${approvalPageClientId}'
          ]
          // Checked again by the app (app/signin.py), which answers 403 to anyone else.
          defaultAuthorizationPolicy: {
            allowedPrincipals: {
              groups: [
                onCallGroupId
              ]
            }
          }
        }
      }
    }
  }
}
