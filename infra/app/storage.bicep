// Storage for the Functions host, the deployment package, the remediation queues and the ledger.
// Shared-key access is off: everything, the host included, connects with the managed identity.
param name string
param location string = resourceGroup().location
param tags object = {}
param deploymentContainerName string
@description('Queue of remediation requests; the host moves failing messages to <name>-poison.')
param requestsQueueName string
param ledgerTableName string
@description('Queue of accepted Graph notifications (push path); failing messages go to <name>-poison.')
param pushQueueName string = 'push-notifications'
@description('Table of push subscriptions, delta links and the streaming rules\' state.')
param pushTableName string = 'pushstate'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }

  resource blobService 'blobServices' = {
    name: 'default'

    resource deploymentContainer 'containers' = {
      name: deploymentContainerName
      properties: {
        publicAccess: 'None'
      }
    }
  }

  resource queueService 'queueServices' = {
    name: 'default'

    resource requestsQueue 'queues' = {
      name: requestsQueueName
    }

    resource poisonQueue 'queues' = {
      name: '${requestsQueueName}-poison'
    }

    // Made whether or not the push path is on: empty queues cost nothing, and turning the path on later
    // then needs no storage change.
    resource pushQueue 'queues' = {
      name: pushQueueName
    }

    resource pushPoisonQueue 'queues' = {
      name: '${pushQueueName}-poison'
    }
  }

  resource tableService 'tableServices' = {
    name: 'default'

    resource ledgerTable 'tables' = {
      name: ledgerTableName
    }

    // The re-scan quota (POST /api/scan) has a table of its own, named like the code does it
    // (app/runtime.py quota_table: the ledger's name + 'quota', at most 63 characters).
    resource quotaTable 'tables' = {
      name: take('${ledgerTableName}quota', 63)
    }

    resource pushTable 'tables' = {
      name: pushTableName
    }
  }
}

output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
